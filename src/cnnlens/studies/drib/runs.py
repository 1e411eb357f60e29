"""Saving, loading and reusing gated models; the run the CLI and the demo share.

A gated model is saved with :func:`cnnlens.checkpoint.save` (safetensors +
JSON); the JSON's ``extra["drib"]`` records the gated layers, so
:func:`load_gated` rebuilds the base architecture, gates it the same way and
loads the weights. A run folder holds ``model/`` and ``run.json`` (identity,
histories, evaluation), and ``ungated/``, a copy of the ungated model, where it was
given rather than trained in ``base/`` (:func:`load_ungated` reopens either, so a run
gated from a user's module needs neither its code nor its weights file again); an
identical finished run is reused.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ... import checkpoint
from ...data.adapt import as_dataset
from ...errors import CheckpointError, ConfigError, LayerError
from ...io import write_json
from ...train import evaluate
from .counting import dynamic_macs
from .gate import GateSpec, default_layers, gate
from .training import GateRecipe, train_gated

UNGATED = "ungated"


def _save_net(model: nn.Module, folder: str | Path, *, data, extra: dict) -> Path:
    """Write a cnnlens net to ``folder`` with the card of ``data``, the set it was trained on."""
    ds = as_dataset(data)
    if getattr(model, "arch", None) is None:
        raise CheckpointError(
            "only gated cnnlens nets (with model.arch) can be saved and rebuilt; save a user "
            "model's state_dict and gate it again with the same layers="
        )
    return checkpoint.save(
        model,
        folder,
        classes=ds.classes,
        mean=ds.mean,
        std=ds.std,
        input_shape=ds.image_shape,
        extra=extra,
    )


def save_gated(model: nn.Module, folder: str | Path, *, data, extra: dict | None = None) -> Path:
    """Write a gated cnnlens net to ``folder`` (``data``: the set it was trained on)."""
    return _save_net(model, folder, data=data, extra={**(extra or {}), "drib": model.drib})


def load_ungated(run: str | Path, identity: dict, *, device: str | None = None) -> nn.Module:
    """The ungated model of gated run ``run`` (``identity``: its ``run.json``'s): the copy
    in ``run/ungated`` when the run keeps one made with this identity, else the saved model
    its identity names (a run whose base was trained in ``base/`` or given as a folder)."""
    from ...loading import load

    run = Path(run)
    copy = run / UNGATED
    if (copy / checkpoint.META_FILE).is_file():
        if (checkpoint.read_meta(copy).get("extra") or {}).get("ungated_of") == identity:
            return load(copy, device=device)
    named = Path(str(identity.get("model", "")))
    if not any((p / checkpoint.META_FILE).is_file() for p in (named, named / "model")):
        raise CheckpointError(
            f"the ungated model of {run} is gone: {str(named)!r} (and no {UNGATED}/ copy in "
            "the run); train the run again"
        )
    return load(named, device=device)


def load_gated(folder: str | Path, *, device: str | None = None) -> nn.Module:
    """Rebuild and load a gated model saved by :func:`save_gated`."""
    folder = Path(folder)
    meta = checkpoint.read_meta(folder)
    drib = (meta.get("extra") or {}).get("drib")
    if not isinstance(drib, dict) or "layers" not in drib:
        raise CheckpointError(f"{folder} holds no gated model (no extra.drib in model.json)")
    base = checkpoint.rebuild(meta, folder / "model.json")
    gated = gate(
        base,
        masks=int(drib["masks"]),
        layers=[GateSpec(*spec) for spec in drib["layers"]],
        links=drib.get("links") or {},
    )
    return checkpoint.load(folder, model=gated, device=device)


def is_gated_folder(folder: str | Path) -> bool:
    path = Path(folder) / "model.json"
    if not path.is_file():
        return False
    try:
        return "drib" in (json.loads(path.read_text()).get("extra") or {})
    except (OSError, json.JSONDecodeError):
        return False


def evaluate_gated(base: nn.Module, gated: nn.Module, test) -> dict:
    """Accuracy and (dynamic) MACs of the ungated and the gated model on ``test``."""
    test = as_dataset(test)
    x, _ = test.tensors()
    acc_base = evaluate(base, test)["accuracy"]
    acc_gated = evaluate(gated, test)["accuracy"]
    dyn = dynamic_macs(gated, x)
    return {
        "n_test": len(test),
        "ungated": {"accuracy": acc_base, "macs": dyn.before},
        "gated": {"accuracy": acc_gated, "macs": dyn.mean},
        "reduction_ratio": dyn.reduction_ratio,
        "accuracy_drop_pt": 100 * (acc_base - acc_gated),
        "layers": dyn.layers,
    }


@dataclass
class GatedRun:
    """A trained gated model, its histories and evaluation; ``reused`` if loaded."""

    model: nn.Module
    history: dict
    evaluation: dict
    reused: bool
    seconds: float
    folder: Path
    identity: dict = field(default_factory=dict)
    plane: dict | None = None


PLANE_FILE = "plane.json"


def check_gated_run(
    out: str | Path,
    identity: dict,
    *,
    masks: int = 4,
    recipe: GateRecipe | None = None,
    overwrite: bool = False,
) -> tuple[dict, dict | None]:
    """Check what :func:`gated_run` is asked before any work: ``masks``, the recipe, ``out``
    writable and free of a gated run with other settings (unless ``overwrite``). Returns
    the run's identity key and the saved record of an identical run (else None)."""
    from ...io import check_writable_folder
    from ...runs import saved_run

    if isinstance(masks, bool) or not isinstance(masks, int) or masks < 1:
        raise ConfigError(f"masks must be a positive integer, got {masks!r}")
    recipe = recipe or GateRecipe()
    if not isinstance(recipe, GateRecipe):
        raise ConfigError(f"recipe must be a GateRecipe, got {type(recipe).__name__}")
    check_writable_folder(out)
    key = json.loads(json.dumps({**identity, "masks": masks, "recipe": recipe.to_dict()}))
    return key, saved_run(out, key, overwrite=overwrite)


def check_gateable(model: nn.Module) -> None:
    """Refuse a model :func:`~.gate.gate` has no default layers for (a LeNet, a user's
    net), before any training: a cnnlens CIFAR ResNet or VGG."""
    if getattr(model, "arch", None) is None:
        raise LayerError(
            f"the model to gate must be a cnnlens net (resnet*, vgg*), not {type(model).__name__}"
        )
    default_layers(model)


def gated_run(
    base: nn.Module,
    *,
    identity: dict,
    train,
    val,
    test,
    out: str | Path,
    masks: int = 4,
    recipe: GateRecipe | None = None,
    reuse: bool = True,
    overwrite: bool = False,
    plane: dict | None = None,
    keep_base: bool = False,
) -> GatedRun:
    """Gate ``base`` and train it (:func:`train_gated`) into ``out``, or reuse an identical run.

    ``identity`` describes the base model and data (with ``masks`` and the
    recipe it decides whether a saved run is the same). A run in ``out`` with
    other settings is refused unless ``overwrite``; every input (the base
    gateable, its fit to the data, ``out`` writable) is checked before work.

    ``plane``: measure the gated network's information plane while it trains
    (:func:`~.gated_plane.gated_plane` settings ``layers``, ``n``, ``bins``,
    ``noise_variance``; on ``test``) into ``out/plane.json``; part of the run's identity,
    since a finished run without it cannot give the trajectory afterwards.

    ``keep_base``: save a copy of ``base`` in ``out/ungated`` (with the gated model's card),
    so that the run reopens without what it was given (:func:`load_ungated`).
    """
    from ...compatibility import check_fits
    from ...runs import load_saved

    out = Path(out)
    recipe = recipe or GateRecipe()
    if plane is not None:
        identity = {**identity, "plane": plane}
    key, saved = check_gated_run(out, identity, masks=masks, recipe=recipe, overwrite=overwrite)
    if reuse and saved is not None and (plane is None or (out / PLANE_FILE).is_file()):
        if not isinstance(saved.get("history"), dict) or not isinstance(
            saved.get("evaluation"), dict
        ):
            raise CheckpointError(
                f"{out / 'run.json'} lacks the history or evaluation of a gated run; "
                "pass --overwrite (overwrite=True) to train over it"
            )
        model = load_saved(out / "model", load_gated)
        measured = None if plane is None else json.loads((out / PLANE_FILE).read_text())
        return GatedRun(model, saved["history"], saved["evaluation"], True, 0.0, out, key, measured)
    check_gateable(base)
    train, test = as_dataset(train), as_dataset(test)
    check_fits(base, test, data=test.name)
    t0 = time.perf_counter()
    model = gate(base, masks=masks)
    callback = None
    if plane is not None:
        from .gated_plane import gated_plane

        callback = gated_plane(model, test, **plane)
    gating, finetune = train_gated(
        model, train, val, recipe=recipe, callbacks=[callback] if callback else ()
    )
    seconds = time.perf_counter() - t0
    history = {
        "gating": gating.history,
        "finetune": finetune.history if finetune is not None else [],
    }
    evaluation = evaluate_gated(base, model, test)
    measured = None
    if callback is not None:
        from .gated_plane import plane_summary

        phases = {e: "gates" for e in range(1, len(gating.history) + 1)}
        phases.update(
            {len(gating.history) + e: "fine-tune" for e in range(1, len(history["finetune"]) + 1)}
        )
        measured = plane_summary(callback, phases)
        write_json(out / PLANE_FILE, measured)
    save_gated(model, out / "model", data=train, extra={"identity": key})
    if keep_base:
        _save_net(base, out / UNGATED, data=train, extra={"ungated_of": key})
    write_json(
        out / "run.json",
        {"identity": key, "history": history, "evaluation": evaluation, "seconds": seconds},
    )
    return GatedRun(model, history, evaluation, False, seconds, out, key, measured)

"""``cnnlens explain``: attribution maps for test images of a saved model.

    cnnlens explain --model runs/x --data shapes --images 0:16 \\
        --methods grad-cam,integrated-gradients --out runs/x/explain

Writes ``maps.npz`` (per method ``<method>`` maps ``[N,H,W]`` and
``<method>.target``; plus ``indices``, ``labels``, ``predicted``),
``grid.png`` (images x methods) and ``explain.json`` (settings and timings).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ..errors import InputError, LayerError, TargetError, first_line
from ..placement import model_device
from .model_spec import model_options


def parse_images(spec: str, total: int) -> list[int]:
    """``--images``: ``"16"`` (the first 16, as ``evaluate --images``), ``"0:16"``,
    ``"1,5,9"`` or ``"0:100:10"`` -> indices within ``[0, total)``."""
    text = spec.strip()
    if text.isdigit():
        n = int(text)
        if not 1 <= n <= total:
            raise InputError(f"--images {n}: the split holds {total} images (give 1 .. {total})")
        return list(range(n))
    return parse_index(text, total, option="--images")


def parse_index(spec: str, total: int, *, option: str = "--index") -> list[int]:
    """``"0:16"``, ``"3"``, ``"1,5,9"`` or ``"0:100:10"`` -> indices within ``[0, total)``."""
    out: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if ":" in part:
                bits = [int(b) if b else None for b in part.split(":")]
                if len(bits) > 3 or any(b is not None and b < 0 for b in bits[:2]):
                    raise ValueError(part)
                if bits[-1] == 0 and len(bits) == 3:
                    raise ValueError(part)
                if len(bits) > 1 and bits[1] is not None and bits[1] > total:
                    out.append(bits[1] - 1)  # a slice past the split: named below
                out.extend(range(total)[slice(*bits)])
            elif part:
                out.append(int(part))
    except ValueError as exc:
        raise InputError(f"{option} must look like 0:16 or 1,5,9, got {spec!r}") from exc
    bad = [i for i in out if not 0 <= i < total]
    if bad or not out:
        raise InputError(
            f"{option} {spec!r} selects no image or images outside [0, {total}): {bad[:5]}"
        )
    return out


def parse_params(items: list[str]) -> dict[str, object]:
    """``key=value`` strings -> dict; values parsed as int, float, bool or kept as text."""
    params: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"--param must be key=value (e.g. steps=32), got {item!r}")
        value: object = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        if raw in ("true", "false", "none"):
            value = {"true": True, "false": False, "none": None}[raw]
        params[key.strip()] = value
    return params


def parse_target(text: str) -> int | None:
    """``"predicted"`` -> ``None`` (each image's predicted class); else a class index >= 0."""
    if text.strip() == "predicted":
        return None
    try:
        value = int(text)
    except ValueError:
        raise InputError(
            f"--target must be a class index >= 0 or 'predicted', got {text!r}"
        ) from None
    if value < 0:
        raise InputError(f"--target must be a class index >= 0 or 'predicted', got {value}")
    return value


def split_params(hp: dict[str, object], names: list[str]) -> dict[str, dict[str, object]]:
    """``--param`` values -> each method's own: a name goes to every selected method that
    takes it; a name no selected method takes is refused. Each method's share is
    checked by its declaration (:meth:`Method.check_params`)."""
    from .. import attribution
    from ..params import check_names

    per_method = {}
    taken: set[str] = set()
    for name in names:
        accepted = attribution.get(name).accepted(hp)
        per_method[name] = {k: v for k, v in hp.items() if k in accepted}
        taken |= accepted
    check_names(f"--param: {', '.join(names)}", hp, taken, "hyperparameter")
    for name, params in per_method.items():
        attribution.get(name).check_params(params)
    return per_method


def method_names(spec: str) -> list[str]:
    """``"all"`` -> every registered method (as ``evaluate --methods all``); else a comma
    list, each name checked so an unknown one fails before any work."""
    from .. import attribution

    if spec.strip() == "all":
        return list(attribution.methods())
    names = list(dict.fromkeys(m.strip() for m in spec.split(",") if m.strip()))
    if not names:
        raise InputError(f"--methods must name at least one method or 'all', got {spec!r}")
    for name in names:
        attribution.get(name)
    return names


def prepare_methods(
    net,
    names: list[str],
    params: dict[str, dict[str, object]],
    *,
    model,
    data: str,
    folder: Path,
    skip: bool,
    log,
) -> dict[str, str]:
    """Run each method's ``prepare`` (IBA's statistics, a VAE, ...: what its ``needs``
    say) and add what it returns to ``params[name]``; ``model`` is the
    :class:`~cnnlens.loading.spec.ModelSpec` (training images are read as ``net``'s card
    says). With ``skip`` (``--methods all``)
    a method that cannot be prepared is removed from ``names`` and reported
    (``{name: why}``); else its error stops the command."""
    from .. import attribution
    from ..attribution import Setup
    from ..errors import CnnlensError
    from ..loading.spec import model_data

    def train():
        return model_data(net, data, "train")

    setup = Setup(
        net,
        train=train,
        data=data,
        model_path=model.folder,
        folder=Path(folder),
    )
    skipped = {}
    for name in list(names):
        try:
            params[name].update(attribution.get(name).prepare(setup, params[name]))
        except CnnlensError as exc:
            if not skip:
                raise
            names.remove(name)
            skipped[name] = str(exc)
            log(f"{name}: skipped ({first_line(exc)})")
    return skipped


def given_files(hp: dict[str, object], names: list[str], **files: object) -> None:
    """Options such as ``--vae`` into ``hp`` when a selected method takes them."""
    from .. import attribution

    for key, value in files.items():
        if value is not None and any(key in attribution.get(n).accepted(hp) for n in names):
            hp.setdefault(key, str(value))


def register(app: typer.Typer) -> None:
    @app.command()
    @model_options()
    def explain(
        model,
        data: str = typer.Option("shapes", help="data set (test split is used)"),
        images: str = typer.Option(
            "0:16", help="test images: N (the first N, as evaluate --images), 0:16, 1,5,9, ..."
        ),
        methods: str = typer.Option(
            "grad-cam", help="comma list of methods, or 'all' registered (as evaluate --methods)"
        ),
        index: str = typer.Option(None, hidden=True, help="old spelling of --images"),
        method: str = typer.Option(None, hidden=True, help="old spelling of --methods"),
        target: str = typer.Option(
            "predicted", help="class index to explain, or 'predicted' (each image's top-1)"
        ),
        param: list[str] = typer.Option(  # noqa: B008
            [], help="hyperparameter key=value for every method that has it (repeatable)"
        ),
        out: Path = typer.Option(..., help="output folder"),
        device: str = typer.Option(None, help="cpu, cuda, ... (default: where it loads)"),
        memory: str = typer.Option(
            None,
            help="memory budget of the expanded chunks (steps, samples, masks): bytes or a "
            "size such as 2GiB or 512MB (default: a share of the free memory)",
        ),
        vae: Path = typer.Option(
            None,
            help="saved VAE folder, for methods that take a vae (default: found by the "
            "method, e.g. <model run folder>/vae-<data> from `cnnlens train-vae`)",
        ),
    ) -> None:
        """Explain test images of a saved model with one or more attribution methods."""
        import numpy as np
        import torch

        from .. import attribution
        from ..chunking import MEMORY
        from ..io import atomic_path, check_writable_folder, write_bytes, write_json
        from ..loading.spec import model_data
        from ..params import check_options
        from ..plotting import to_png
        from ..report.sections.explanations import explanation_grid

        # validate, then write: every input below is checked before the first file
        from .renamed import renamed

        check_options({"--memory": (memory, MEMORY)})
        methods = renamed("--method", "--methods", method, methods, "grad-cam")
        images = renamed("--index", "--images", index, images, "0:16")
        names = method_names(methods)
        every_method = methods.strip() == "all"
        hp = parse_params(param)
        goal_class = parse_target(target)
        given_files(hp, names, vae=vae)
        split_params(hp, names)
        check_writable_folder(out)
        net = model.open(device=device)
        dataset = model_data(net, data, "test")
        # the old --index N meant image N; --images N means the first N
        indices = (parse_index if index is not None else parse_images)(images, len(dataset))
        if goal_class is not None and goal_class >= dataset.num_classes:
            raise TargetError(
                f"--target {goal_class} is not a class of {data} (0 .. {dataset.num_classes - 1})"
            )
        per_method = split_params(hp, names)
        for name, params in per_method.items():  # layers, now the model is here
            attribution.get(name).check_params(params, net)
        x, labels = dataset.tensors(indices)
        dev = model_device(net)
        x = x.to(dev)
        # what each method needs prepared (statistics saved once in --out, a VAE found)
        skipped = prepare_methods(
            net, names, per_method, model=model, data=data, folder=out,
            skip=every_method, log=typer.echo,
        )  # fmt: skip
        with torch.no_grad():
            net.eval()
            probs = net(x).softmax(1)
        predicted = probs.argmax(1)
        goal = predicted if goal_class is None else torch.full_like(predicted, goal_class)
        arrays: dict[str, np.ndarray] = {
            "indices": np.asarray(indices),
            "labels": labels.cpu().numpy(),
            "predicted": predicted.cpu().numpy(),
        }
        columns, timings = {}, {}
        for name in names:
            kwargs = dict(per_method[name])
            if memory is not None and "memory" in attribution.get(name).accepted(kwargs):
                kwargs.setdefault("memory", memory)  # --param memory= wins
            start = time.perf_counter()
            try:
                e = attribution.explain(net, x, name, target=goal, **kwargs)
            except LayerError as exc:
                if not every_method:  # a method named on purpose must work
                    raise
                # 'all' means every method this model supports: CAM needs a pooled linear head
                skipped[name] = str(exc)
                typer.echo(f"{name}: skipped ({first_line(exc)})")
                continue
            timings[name] = time.perf_counter() - start
            arrays[name] = e.numpy()
            arrays[f"{name}.target"] = e.target.cpu().numpy()
            columns[name] = e.maps.cpu()
            typer.echo(f"{name}: {len(x)} images in {timings[name]:.2f} s")
        with atomic_path(out / "maps.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        classes = dataset.classes
        titles = [
            f"#{i} {classes[int(p)]} {float(probs[k, p]):.2f}"
            for k, (i, p) in enumerate(zip(indices, predicted, strict=True))
        ]
        fig = explanation_grid(dataset.raw_batch(indices), columns, titles)
        write_bytes(out / "grid.png", to_png(fig))
        write_json(
            out / "explain.json",
            {
                "model": str(model),
                **({"model_card": model.card()} if model.card_given else {}),
                "data": data,
                "indices": indices,
                "methods": [n for n in names if n not in skipped],
                "params": {k: repr(v) for name in names for k, v in per_method[name].items()},
                "target": "predicted" if goal_class is None else goal_class,
                "seconds": timings,
                "skipped": skipped,
            },
        )
        typer.echo(f"maps in {out / 'maps.npz'}, grid in {out / 'grid.png'}")

"""Train the attribute network through the one training loop, and reuse a finished run.

:func:`train_attribute_network` builds an :class:`~.network.AttributeNetwork` for a data set's
attributes and fits it with :class:`~.objective.AttributeObjective` via
:func:`cnnlens.train.fit` (``targets="attributes"``). :func:`attribute_run` is the job the CLI
and the report share: load a named data set, train (or reuse an identical finished run in
``out``: ``out/run.json`` identifies it), save with :func:`cnnlens.save`, and measure the
mean and per-attribute test accuracy.

Cost: the extractor never downsamples and the K mask convs (C -> C, 3x3 each) dominate
(at 16x16 px, K = 10: 411 M MACs per image, 377 M of them the masks). The ``shapes`` recipe
therefore uses 16x16 images (``SHAPES_RECIPE``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ... import checkpoint
from ...chunking import run_chunked
from ...data import load as load_data
from ...data.base import ImageDataset
from ...errors import CheckpointError, ConfigError
from ...hooks import frozen
from ...io import write_json
from ...placement import model_device
from ...train import OptimizerConfig, TrainConfig, TrainResult, fit
from .data import attribute_dataset
from .network import AttributeNetwork, PlainAttributeCNN
from .objective import PAPER_LAMBDA, AttributeObjective
from .passes import accuracy_per_attribute, run_pass, subset_indices

ARCH = "attribute-net"
PLAIN_ARCH = "plain-attribute-cnn"
RESNET_ARCH = "resnet18"  # cnnlens.nets' ImageNet-shaped ResNet-18, a multi-label head
KINDS = {"attention": ARCH, "plain": PLAIN_ARCH, "resnet18": RESNET_ARCH}
# Measured on the project's 2-core CPU (shared, load ~9): the shapes recipe took 4 min user +
# 1 min system CPU time (about 2.5 min wall on two free cores; 13.5 min wall under that load),
# test accuracy 79.4 % averaged over the 10 attributes. Quick: for the demo's smoke test only.
SHAPES_RECIPE = {"size": 16, "n_train": 2500, "n_test": 1000, "epochs": 3}
QUICK_RECIPE = {"size": 16, "n_train": 128, "n_test": 64, "epochs": 1}


def default_config(epochs: int = 3, seed: int = 0) -> TrainConfig:
    """Adam (lr 3e-3), one-cycle schedule, no augmentation (a flip or crop would change the
    ``left`` / ``top`` attributes of ``shapes``)."""
    return TrainConfig(
        epochs=epochs,
        batch_size=64,
        optimizer=OptimizerConfig(name="adam", lr=3e-3, weight_decay=0.0),
        schedule="onecycle",
        augment=(),
        seed=seed,
    )


def build_network(
    data: ImageDataset, channels=(32, 64, 64, 128), kind: str = "attention"
) -> AttributeNetwork | PlainAttributeCNN:
    """An untrained network for ``data``'s image channels and attributes, with ``arch`` set;
    ``kind="plain"``: the plain multi-label CNN of the same extractor; ``kind="resnet18"``:
    ``cnnlens.nets``' ResNet-18 with one logit per attribute (``channels`` unused)."""
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    data = attribute_dataset(data)
    if kind == "resnet18":
        return _resnet(
            int(data.attributes.shape[1]), int(data.image_shape[0]), data.attribute_names
        )
    kwargs = {
        "num_classes": int(data.attributes.shape[1]),
        "in_channels": int(data.image_shape[0]),
        "channels": [int(c) for c in channels],
        "attribute_names": list(data.attribute_names),
    }
    model = (AttributeNetwork if kind == "attention" else PlainAttributeCNN)(**kwargs)
    model.arch = {"name": KINDS[kind], "kwargs": kwargs}
    return model


def _resnet(num_attributes: int, in_channels: int, names) -> nn.Module:
    from ... import nets

    model = nets.create(RESNET_ARCH, num_classes=num_attributes, in_channels=in_channels)
    model.num_attributes, model.attribute_names = num_attributes, list(names)
    return model


def train_attribute_network(
    train,
    val=None,
    *,
    config: TrainConfig | None = None,
    lam: float = PAPER_LAMBDA,
    reduction: str = "sum",
    channels=(32, 64, 64, 128),
    out: str | Path | None = None,
    kind: str = "attention",
    resume: bool = False,
) -> tuple[AttributeNetwork, TrainResult]:
    """Build and train the network on ``train``'s attributes; returns it (eval mode) and
    the loop's history. ``train``/``val``: a data set with attributes or (x, attributes).
    ``kind="plain"`` / ``"resnet18"`` train the plain CNN / ResNet-18 with the same summed
    BCE (no masks, no L1).
    ``resume``: continue from the last checkpoint under ``out`` (see :func:`~cnnlens.train.fit`)."""
    train = attribute_dataset(train)
    val = None if val is None else attribute_dataset(val)
    config = config or default_config()
    torch.manual_seed(config.seed)
    model = build_network(train, channels, kind)
    objective = AttributeObjective(lam, reduction) if kind == "attention" else PlainObjective()
    result = fit(
        model,
        train,
        val,
        config=config,
        objective=objective,
        out=out,
        targets="attributes",
        desc="attributes",
        resume=resume,
    )
    return model, result


def load_attribute_network(path: str | Path, *, device=None) -> AttributeNetwork:
    """A network saved by :func:`attribute_run` / :func:`cnnlens.save` (pruned ones too)."""
    path = Path(path)
    meta = checkpoint.read_meta(path)
    arch = meta.get("arch") or {}
    name = arch.get("name")
    if name not in KINDS.values():
        raise CheckpointError(f"{path} holds a {name!r}, not one of {sorted(KINDS.values())}")
    kwargs = dict(arch.get("kwargs") or {})
    if name == RESNET_ARCH:
        classes = meta.get("classes") or []
        model = _resnet(int(kwargs["num_classes"]), int(kwargs.get("in_channels", 3)), classes)
        return checkpoint.load(path, model=model, device=device)
    cls = AttributeNetwork if name == ARCH else PlainAttributeCNN
    try:
        model = cls(**kwargs)
    except TypeError as exc:
        raise CheckpointError(f"{path}: cannot build {name!r} from {kwargs}: {exc}") from None
    model.arch = {"name": name, "kwargs": kwargs}
    return checkpoint.load(path, model=model, device=device)


def save_attribute_network(model: AttributeNetwork, path, data: ImageDataset, extra=None):
    """:func:`cnnlens.save` with the data set's normalisation and attribute names."""
    return checkpoint.save(
        model,
        path,
        classes=list(model.attribute_names),
        mean=data.mean,
        std=data.std,
        input_shape=data.image_shape,
        extra=extra,
    )


class PlainObjective(AttributeObjective):
    """Summed per-attribute BCE of a model without masks (the plain CNN)."""

    def __init__(self) -> None:
        super().__init__(0.0)

    def loss(self, model, x, y):
        logits = model(x)
        target = y.float()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1).mean()
        correct = float(((logits > 0) == (target > 0.5)).float().mean(1).sum())
        return bce, {"correct": correct, "count": float(len(x))}


def attribute_accuracy(model, data, n: int | None = None) -> torch.Tensor:
    """Per-attribute accuracy ``[K]`` of either kind of network on ``data``."""
    if callable(getattr(model, "forward_masks", None)):
        passed = run_pass(model, data, n=n)
        return accuracy_per_attribute(passed.logits, passed.targets)
    idx = subset_indices(data, n)
    device = model_device(model)
    with frozen(model), torch.no_grad():
        logits = run_chunked(
            lambda a, b: model(data.tensors(idx[a:b])[0].to(device)).cpu(), len(idx), 64
        )
    return accuracy_per_attribute(logits, data.attributes[idx].bool())


@dataclass
class AttributeRun:
    """A trained network, its data, history and test accuracy (mean and per attribute)."""

    model: AttributeNetwork | PlainAttributeCNN
    train: ImageDataset
    test: ImageDataset
    history: list[dict]
    accuracy: dict[str, float]  # per attribute name
    reused: bool
    seconds: float
    identity: dict = field(default_factory=dict)

    @property
    def mean_accuracy(self) -> float:
        return sum(self.accuracy.values()) / len(self.accuracy)

    def to_dict(self) -> dict:
        return {
            "mean_accuracy": self.mean_accuracy,
            "accuracy": dict(self.accuracy),
            "seconds": self.seconds,
            "reused": self.reused,
            "identity": self.identity,
        }


def load_splits(data: str, *, size: int | None, n_train: int | None, n_test: int | None):
    """Train and test splits of a named data set, checked for attributes."""
    options: dict = {} if size is None else {"size": int(size)}
    train = load_data(data, split="train", **options)
    test = load_data(data, split="test", **options)
    train, test = attribute_dataset(train), attribute_dataset(test)
    if n_train is not None and n_train < len(train):
        train = _first(train, n_train, data, "train", options)
    if n_test is not None and n_test < len(test):
        test = _first(test, n_test, data, "test", options)
    return train, test


def _first(dataset: ImageDataset, n: int, spec: str, split: str, options: dict) -> ImageDataset:
    if spec == "shapes":  # generated: ask for only n images
        return attribute_dataset(load_data(spec, split=split, n=int(n), **options))
    from ...data.base import TensorDataset

    x = dataset.raw_batch(range(n))
    return TensorDataset(
        x,
        dataset.labels[:n],
        classes=dataset.classes,
        mean=dataset.mean,
        std=dataset.std,
        attributes=dataset.attributes[:n],
        attribute_names=dataset.attribute_names,
        name=dataset.name,
    )


def check_attribute_run(
    *,
    data: str,
    out: str | Path,
    size: int | None,
    n_train: int | None,
    n_test: int | None,
    epochs: int,
    lam: float,
    reduction: str,
    kind: str,
) -> None:
    """Refuse any setting of :func:`attribute_run` before data is read or a file written:
    the kind, the ||M||_1 reduction, lambda >= 0, epochs >= 1, the sizes against the
    splits (``n_train`` / ``n_test`` at most what they hold) and ``out`` writable."""
    from ...data import check_count
    from ...io import check_writable_folder
    from .objective import REDUCTIONS

    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not lam >= 0:
        raise ConfigError(f"lambda must be >= 0, got {lam}")
    default_config(epochs)  # epochs >= 1
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"size must be a positive integer, got {size!r}")
    options = {} if size is None else {"size": int(size)}
    check_count(n_train, data, "train", option="--n-train", **options)
    check_count(n_test, data, "test", option="--n-test", **options)
    check_writable_folder(out)


def attribute_run(
    *,
    data: str = "shapes",
    out: str | Path,
    size: int | None = SHAPES_RECIPE["size"],
    n_train: int | None = SHAPES_RECIPE["n_train"],
    n_test: int | None = SHAPES_RECIPE["n_test"],
    epochs: int = SHAPES_RECIPE["epochs"],
    lam: float = PAPER_LAMBDA,
    reduction: str = "sum",
    seed: int = 0,
    reuse: bool = True,
    kind: str = "attention",
    resume: bool = False,
    overwrite: bool = False,
) -> AttributeRun:
    """Train on ``data``'s attributes into ``out`` (``model/``, ``run.json``) or reuse it.
    ``kind="plain"``: the plain multi-label CNN of the same extractor (the baseline).
    ``resume``: a killed training continues from its last epoch checkpoint in ``out``.
    ``n_train`` / ``n_test``: the first n images of each split (None: all; more than the
    split holds is refused). A run in ``out`` with other settings or unreadable weights is
    refused unless ``overwrite``; every input is checked before a file is written."""
    from ...runs import load_saved, saved_run

    check_attribute_run(
        data=data,
        out=out,
        size=size,
        n_train=n_train,
        n_test=n_test,
        epochs=epochs,
        lam=lam,
        reduction=reduction,
        kind=kind,
    )
    out = Path(out)
    train, test = load_splits(data, size=size, n_train=n_train, n_test=n_test)
    config = default_config(epochs, seed)
    identity = json.loads(
        json.dumps(
            {
                "kind": kind,
                "data": data,
                "size": size,
                "n_train": len(train),
                "n_test": len(test),
                "lambda": lam,
                "reduction": reduction,
                "config": config.to_dict(),
            }
        )
    )
    run_file = out / "run.json"
    saved = saved_run(out, identity, overwrite=overwrite)
    if reuse and saved is not None:
        try:
            acc = {k: float(v) for k, v in saved["accuracy"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CheckpointError(
                f"{run_file} records no attribute accuracy; pass --overwrite to train over it"
            ) from None
        model = load_saved(out / "model", load_attribute_network)
        return AttributeRun(model, train, test, saved.get("history", []), acc, True, 0.0, identity)
    model, result = train_attribute_network(
        train, None, config=config, lam=lam, reduction=reduction, out=out, kind=kind, resume=resume
    )
    per = attribute_accuracy(model, test)
    accuracy = {name: float(a) for name, a in zip(model.attribute_names, per, strict=True)}
    save_attribute_network(
        model, out / "model", train, extra={"data": data, "test_accuracy": accuracy}
    )
    run = AttributeRun(
        model, train, test, result.history, accuracy, False, result.seconds, identity
    )
    write_json(run_file, {**run.to_dict(), "history": result.history})
    return run

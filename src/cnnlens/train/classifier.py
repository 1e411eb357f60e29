"""Train a named architecture on a named data set into a run folder, or reuse the model a
previous identical run saved there; and the training settings cnnlens uses for each
architecture unless told otherwise (the demo's, the CLI's).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import checkpoint, nets
from ..compatibility import check_fits
from ..data import load as load_data
from ..data.base import ImageDataset
from ..errors import InputError
from ..io import write_json
from .config import OptimizerConfig, TrainConfig
from .loop import TrainResult, evaluate, fit


@dataclass
class TrainedModel:
    """A model with the data it was trained on, its history and test accuracy."""

    model: nn.Module
    train: ImageDataset
    val: ImageDataset | None
    test: ImageDataset
    history: list[dict]
    test_accuracy: float
    reused: bool
    seconds: float


def _split_or_none(spec: str, split: str, options: dict) -> ImageDataset | None:
    try:
        return load_data(spec, split=split, **options)
    except Exception:  # data sets without that split
        return None


def classifier_identity(
    data: str,
    arch: str,
    config: TrainConfig,
    data_options: dict | None = None,
    arch_options: dict | None = None,
) -> dict:
    """What identifies a run of :func:`train_classifier` (``run.json``'s ``identity``)."""
    identity = {
        "data": data,
        "data_options": dict(data_options or {}),
        "arch": arch,
        "arch_options": dict(arch_options or {}),
        "config": config.to_dict(),
    }
    return json.loads(json.dumps(identity))


def train_classifier(
    *,
    data: str,
    arch: str,
    out: str | Path,
    config: TrainConfig,
    data_options: dict | None = None,
    arch_options: dict | None = None,
    resume: bool = False,
    reuse: bool = True,
    overwrite: bool = False,
) -> TrainedModel:
    """Train ``arch`` on ``data`` into ``out`` (model + history), or reuse it.

    The run is identified by its data set, architecture, options and training
    configuration (``out/run.json``); with ``reuse`` an identical finished run
    in ``out`` is loaded instead of trained again. A run there with other
    settings, or one that cannot be read, is refused unless ``overwrite``
    (:func:`cnnlens.runs.saved_run`). Every input is checked before the first
    file is written.
    """
    from ..io import check_writable_folder
    from ..runs import load_saved, saved_run

    out = Path(out)
    if not isinstance(config, TrainConfig):
        raise InputError(f"config must be a cnnlens.train.TrainConfig, got {type(config).__name__}")
    if arch in nets.names() and nets.kind_of(arch) != "classifier":
        raise InputError(
            f"{arch!r} is not a classifier; train it with `cnnlens train-vae --data {data} "
            "--out ...` (cnnlens.studies.relabel.train_vae)"
        )
    if arch not in nets.names():
        nets.create(arch)  # the unknown-name error, with its typo hint
    check_writable_folder(out)
    data_options = dict(data_options or {})
    arch_options = dict(arch_options or {})
    identity = classifier_identity(data, arch, config, data_options, arch_options)
    run_file = out / "run.json"
    saved = saved_run(out, identity, overwrite=overwrite)  # before the data is read
    train = load_data(data, split="train", **data_options)
    val = _split_or_none(data, "val", data_options)
    test = load_data(data, split="test", **data_options)
    if reuse and not resume and saved is not None:
        model = load_saved(out / "model", checkpoint.load)
        return TrainedModel(
            model,
            train,
            val,
            test,
            saved.get("history", []),
            float(saved.get("test_accuracy", float("nan"))),
            True,
            0.0,
        )
    torch.manual_seed(config.seed)
    channels = train.image_shape[0]
    model = nets.create(arch, num_classes=train.num_classes, in_channels=channels, **arch_options)
    check_fits(model, train, data=data)  # e.g. an architecture made for another image size
    result: TrainResult = fit(model, train, val, config=config, out=out, resume=resume)
    metrics = evaluate(model, test)
    checkpoint.save(
        model,
        out / "model",
        classes=train.classes,
        mean=train.mean,
        std=train.std,
        input_shape=train.image_shape,
        extra={"data": data, "test_accuracy": metrics["accuracy"]},
    )

    write_json(
        run_file,
        {
            "identity": identity,
            "history": result.history,
            "test_accuracy": metrics["accuracy"],
            "seconds": result.seconds,
        },
    )
    return TrainedModel(
        model, train, val, test, result.history, metrics["accuracy"], False, result.seconds
    )


DEMO_CONFIG = TrainConfig(
    epochs=8,
    batch_size=128,
    optimizer=OptimizerConfig(name="sgd", lr=0.1, weight_decay=5e-4),
    schedule="onecycle",
    augment=("crop",),
    seed=0,
)
# SGD with a one-cycle peak of 0.1 trains the CIFAR ResNets here, but VGG-16 on digits
# diverged with it (20 % test accuracy after 15 epochs); at 0.02 it reached 100 %.
VGG_LR = 0.02
# At that rate VGG-16 needs more epochs: on shapes it reached 19 % test accuracy after 5 epochs
# and 98.05 % after 15 (it sat near chance for the first 4 of those 15).
VGG_EPOCHS = 15


def default_lr(arch: str) -> float:
    """The SGD learning rate cnnlens trains ``arch`` with unless told otherwise."""
    return VGG_LR if arch.startswith("vgg") else DEMO_CONFIG.optimizer.lr


def default_epochs(arch: str) -> int:
    """The epochs cnnlens trains ``arch`` for unless told otherwise."""
    return VGG_EPOCHS if arch.startswith("vgg") else DEMO_CONFIG.epochs


def demo_config(arch: str, **changes) -> TrainConfig:
    """:data:`DEMO_CONFIG` with ``changes``, at :func:`default_lr` and :func:`default_epochs`
    for ``arch``."""
    optimizer = dataclasses.replace(DEMO_CONFIG.optimizer, lr=default_lr(arch))
    changes = {"epochs": default_epochs(arch), **changes}
    return dataclasses.replace(DEMO_CONFIG, optimizer=optimizer, **changes)

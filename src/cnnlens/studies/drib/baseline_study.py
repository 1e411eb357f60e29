"""The pruning-baseline table of paper 000 (Tables 1-2): method, static or dynamic, MACs,
reduction, accuracy, CPU latency.

:func:`run_baselines` takes a trained classifier, prunes a copy with each static
method of :mod:`cnnlens.studies.drib.baselines` to the same MAC budget, fine-tunes it
through :func:`cnnlens.train.fit` with the same epoch budget and evaluates it
on the test set, beside the unpruned model. The dynamic baseline ``"fbs"``
(:mod:`cnnlens.studies.drib.fbs`) gets the density whose MACs per input stay within the
same budget and the same epochs of training (predictors and backbone together); its MACs
are the mean per test input. Latency: the median of interleaved timed calls of every
model on one batch of test images (:func:`~.latency.median_ms`), dense for FBS (its
channels are multiplied by zero, not skipped: no sparse path is built for it).

Network slimming first trains a copy with the L1 penalty on the BatchNorm scales
(Liu et al. 2017, Eq. 1) for ``sparsity_epochs``, starting from the trained weights.
After the fine-tune, the BatchNorm running statistics of each pruned model are
re-estimated on (up to 2,048 of) the training images, the same for every static method.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ...cost import macs as count_macs
from ...data import as_dataset
from ...errors import ConfigError, LayerError
from ...placement import model_device
from ...progress import log_line
from ...train import OptimizerConfig, TrainConfig, evaluate, fit
from .baselines import (
    METHODS,
    SEARCH_STEPS,
    mac_budget,
    prune_copy,
    prune_to_macs,
    removed_filters,
    resolve_ignored,
    slimming_batchnorms,
    slimming_objective,
    soft_zeroing,
    zero_smallest_filters,
)

DYNAMIC = ("fbs",)
ALL_METHODS = (*METHODS, *DYNAMIC)
LATENCY_BATCH = 64
LATENCY_REPEATS = 10

FINE_TUNE = TrainConfig(
    epochs=1,
    batch_size=128,
    optimizer=OptimizerConfig(name="sgd", lr=0.01, weight_decay=5e-4),
    schedule="cosine",
    augment=(),
    seed=0,
)


@dataclass
class BaselineRow:
    """One line of the table; ``reduction`` in percent of the unpruned MACs."""

    method: str
    macs: int
    reduction: float
    accuracy: float
    ratio: float = 0.0
    epochs: int = 0
    sparsity_epochs: int = 0
    seconds: float = 0.0
    kind: str = "static"
    latency_ms: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class BaselineStudy:
    """The rows (unpruned first) and the pruned, fine-tuned models by method."""

    rows: list[BaselineRow]
    models: dict[str, nn.Module] = field(default_factory=dict)
    budget: int = 0

    latency_batch: int = 0

    def markdown(self) -> str:
        lines = [
            "| method | kind | MACs (M) | reduction (%) | accuracy (%) | "
            f"latency (ms, batch {self.latency_batch}) | epochs |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for r in self.rows:
            epochs = f"{r.sparsity_epochs} sparsity + {r.epochs}" if r.sparsity_epochs else r.epochs
            latency = "-" if r.latency_ms is None else f"{r.latency_ms:.2f}"
            kind = "-" if r.method == "unpruned" else r.kind
            lines.append(
                f"| {r.method} | {kind} | {r.macs / 1e6:.2f} | {r.reduction:.1f} | "
                f"{100 * r.accuracy:.2f} | {latency} | "
                f"{epochs if r.method != 'unpruned' else '-'} |"
            )
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        keys = list(BaselineRow.__dataclass_fields__)
        lines = [",".join(keys)]
        lines += [",".join(str(getattr(r, k)) for k in keys) for r in self.rows]
        return "\n".join(lines) + "\n"


RECALIBRATION_IMAGES = 2048
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def recalibrate_batchnorm(model: nn.Module, data, *, n: int = RECALIBRATION_IMAGES) -> None:
    """Re-estimate every BatchNorm's running statistics on the first ``n`` images of ``data``.

    Removing a layer's input channels shifts its output distribution, so the running
    statistics its BatchNorm kept no longer fit; a short fine-tune (momentum 0.1) moves them
    only part of the way. Here the BatchNorms alone run in training mode with a cumulative
    average (``momentum=None``) over forwards without gradients; weights do not change.
    """
    from ...chunking import run_chunked

    dataset = as_dataset(data)
    norms = [m for m in model.modules() if isinstance(m, _NORMS) and m.track_running_stats]
    if not norms:
        return
    device = model_device(model)
    modes = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in norms]
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()

        def forward(start: int, stop: int) -> torch.Tensor:
            x, _ = dataset.tensors(range(start, stop))
            with torch.no_grad():
                model(x.to(device))
            return torch.zeros(stop - start)

        run_chunked(forward, min(n, len(dataset)), 128)
    finally:
        for m, momentum in momenta:
            m.momentum = momentum
        for m, mode in modes:
            m.train(mode)


def _config(base: TrainConfig, epochs: int) -> TrainConfig:
    return dataclasses.replace(base, epochs=epochs)


def check_baselines(
    model: nn.Module,
    shape: Sequence[int],
    *,
    methods: Sequence[str],
    macs: float | None,
    reduction: float | None,
    epochs: int,
    sparsity_epochs: int | None,
    lam: float,
    ignored: Sequence[str] | None,
) -> None:
    """Refuse what :func:`run_baselines` would find only after training: unknown methods,
    negative epochs or lambda, a MAC budget outside (0, the unpruned count), ignored layer
    names the model lacks. ``shape``: the ``(C, H, W)`` of one image."""
    from ...layers import get_layer

    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        raise ConfigError(f"methods must be among {ALL_METHODS}, got {list(methods)}")
    if epochs < 0:
        raise ConfigError(f"epochs must be >= 0, got {epochs}")
    if sparsity_epochs is not None and sparsity_epochs < 0:
        raise ConfigError(f"sparsity_epochs must be >= 0, got {sparsity_epochs}")
    if not lam >= 0:
        raise ConfigError(f"lambda must be >= 0, got {lam}")
    mac_budget(count_macs(model, tuple(shape)).total, macs=macs, reduction=reduction)
    for name in ignored or ():
        get_layer(model, name)  # a LayerError with close names when it is missing


def run_baselines(
    model: nn.Module,
    train,
    test,
    *,
    methods: Sequence[str] = ALL_METHODS,
    macs: float | None = None,
    reduction: float | None = None,
    epochs: int = 1,
    sparsity_epochs: int | None = None,
    lam: float = 1e-4,
    config: TrainConfig = FINE_TUNE,
    ignored: Sequence[str] | None = None,
    recalibrate: bool = True,
    steps: int = SEARCH_STEPS,
    fbs_lambda: float = 1e-8,
    latency_batch: int | None = LATENCY_BATCH,
    latency_repeats: int = LATENCY_REPEATS,
) -> BaselineStudy:
    """Prune ``model`` (unchanged) by each method to the budget, fine-tune ``epochs``
    epochs (0: none) on ``train``, re-estimate the BatchNorm statistics on ``train``
    (``recalibrate``; :func:`recalibrate_batchnorm`) and evaluate on ``test``; ``"fbs"``
    is trained as its module says. ``latency_batch``: the batch of test images every
    model is timed on (None: no timing; wall-clock, so it depends on the machine's load)."""
    train, test = as_dataset(train), as_dataset(test)
    shape = tuple(test.image_shape)
    check_baselines(
        model,
        shape,
        methods=methods,
        macs=macs,
        reduction=reduction,
        epochs=epochs,
        sparsity_epochs=sparsity_epochs,
        lam=lam,
        ignored=ignored,
    )
    sparsity_epochs = epochs if sparsity_epochs is None else sparsity_epochs
    ignored = resolve_ignored(model, shape, ignored)
    before = count_macs(model, shape).total
    base_acc = evaluate(model, test)["accuracy"]
    rows = [BaselineRow("unpruned", before, 0.0, base_acc)]
    study = BaselineStudy(rows)
    study.budget = mac_budget(before, macs=macs, reduction=reduction)
    for method in methods:
        t0 = time.perf_counter()
        if method in DYNAMIC:
            row, trained = _fbs_row(model, train, test, study.budget, epochs, config, fbs_lambda)
            row.seconds = time.perf_counter() - t0
            rows.append(row)
            study.models[method] = trained
            log_line(
                f"{method}: {row.macs / 1e6:.2f} M MACs per input ({row.reduction:.1f} % "
                f"fewer), accuracy {100 * row.accuracy:.2f} % (unpruned {100 * base_acc:.2f} %)"
            )
            continue
        source, spent = model, 0
        if method == "slimming" and sparsity_epochs > 0:
            source = copy.deepcopy(model)
            objective = slimming_objective(slimming_batchnorms(source, shape, ignored), lam)
            fit(
                source,
                train,
                config=_config(config, sparsity_epochs),
                objective=objective,
                desc="slimming sparsity",
            )
            spent = sparsity_epochs
        pruned = prune_to_macs(
            source,
            shape,
            method=method,
            macs=macs,
            reduction=reduction,
            ignored=ignored,
            steps=steps,
            data=train if method == "taylor" else None,
        )
        study.budget = pruned.budget
        if method == "sfp":  # soft: zero (not remove) while fine-tuning, then cut
            soft = copy.deepcopy(model)
            counts = removed_filters(model, pruned.model)
            zero_smallest_filters(soft, counts)
            if epochs > 0:
                fit(
                    soft,
                    train,
                    config=_config(config, epochs),
                    callbacks=[soft_zeroing(counts)],
                    desc="sfp fine-tune",
                )
            pruned.model = prune_copy(
                soft,
                torch.zeros(1, *shape, device=model_device(model)),
                method="sfp",
                ratio=pruned.ratio,
                ignored=ignored,
            )
            if removed_filters(model, pruned.model) != counts:
                raise LayerError("soft filter pruning cut other filters than it zeroed")
        elif epochs > 0:
            fit(pruned.model, train, config=_config(config, epochs), desc=f"{method} fine-tune")
        if recalibrate:
            recalibrate_batchnorm(pruned.model, train)
        accuracy = evaluate(pruned.model, test)["accuracy"]
        row = BaselineRow(
            method,
            pruned.macs,
            pruned.reduction,
            accuracy,
            pruned.ratio,
            epochs,
            spent,
            time.perf_counter() - t0,
        )
        rows.append(row)
        study.models[method] = pruned.model
        log_line(
            f"{method}: {pruned.macs / 1e6:.2f} M MACs ({pruned.reduction:.1f} % fewer), "
            f"accuracy {100 * accuracy:.2f} % (unpruned {100 * base_acc:.2f} %)"
        )
    if latency_batch:
        _time_rows(study, model, test, latency_batch, latency_repeats)
    return study


def _fbs_row(model, train, test, budget, epochs, config, lam):
    """FBS (:mod:`.fbs`) at the density that keeps every input within ``budget``."""
    from .fbs import density_for, fbs, fbs_macs, fbs_objective

    shape = tuple(test.image_shape)
    dynamic = fbs(model, seed=config.seed)
    dynamic.to(model_device(model))
    density = density_for(dynamic, shape, budget)
    if epochs > 0:
        fit(
            dynamic,
            train,
            config=_config(config, epochs),
            objective=fbs_objective(dynamic, lam),
            desc="fbs training",
        )
    dynamic.eval()
    accuracy = evaluate(dynamic, test)["accuracy"]
    counted = fbs_macs(dynamic, test)
    row = BaselineRow(
        "fbs", int(round(counted.mean)), counted.reduction_ratio, accuracy, density, epochs
    )
    row.kind = "dynamic"
    return row, dynamic


def _time_rows(study: BaselineStudy, model: nn.Module, test, batch: int, repeats: int) -> None:
    """Each row's median ms on one batch of test images, the models' calls interleaved."""
    from .latency import median_ms

    x, _ = test.tensors(range(min(batch, len(test))))
    x = x.to(model_device(model))
    was_training = model.training
    models = {"unpruned": model.eval(), **{k: m.eval() for k, m in study.models.items()}}
    try:
        times = median_ms(models, x, repeats=repeats)
    finally:
        model.train(was_training)
    study.latency_batch = len(x)
    for row in study.rows:
        row.latency_ms = times.get(row.method)


def _first(dataset, n: int):
    return dataset.subset(range(min(n, len(dataset)))) if hasattr(dataset, "subset") else dataset


def baselines_and_plane(model: nn.Module, train, test, settings: dict) -> dict:
    """The pruning baselines and the information plane the report shows (Tables 1-4), as
    JSON: ``model`` pruned to ``settings["reduction"]`` % fewer MACs by each method of
    :func:`run_baselines` (fine-tuned on the first ``settings["n_fine_tune"]`` training
    images), and the information plane of a ``settings["plane_arch"]`` trained from scratch
    with the :class:`~.information_plane.InformationPlane` callback, with its transition
    and convergence points (:func:`~.information_plane.key_points`)."""
    from ...nets import create
    from .information_plane import InformationPlane, key_points

    fine_tune = _first(train, settings["n_fine_tune"])
    t0 = time.perf_counter()
    study = run_baselines(
        model,
        fine_tune,
        test,
        reduction=settings["reduction"],
        epochs=settings["epochs"],
        sparsity_epochs=settings["sparsity_epochs"],
        lam=settings["lambda"],
        steps=settings["search_steps"],
        latency_batch=settings.get("latency_batch", LATENCY_BATCH),
        latency_repeats=settings.get("latency_repeats", LATENCY_REPEATS),
    )
    prune_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    torch.manual_seed(0)
    plane_train = _first(train, settings["plane_train"])
    net = create(
        settings["plane_arch"],
        num_classes=plane_train.num_classes,
        in_channels=plane_train.image_shape[0],
    )
    plane = InformationPlane(
        test,
        layers=settings["plane_layers"],
        n=settings["plane_images"],
        bins=settings["bins"],
        noise_variance=settings["noise_variance"],
    )
    config = TrainConfig(
        epochs=settings["plane_epochs"],
        batch_size=64,
        optimizer=OptimizerConfig(name="sgd", lr=settings["plane_lr"], weight_decay=5e-4),
        schedule="onecycle",
        augment=(),
        seed=0,
    )
    fit(net, plane_train, config=config, callbacks=[plane], desc="information plane")
    points = []
    for layer in plane.layers:
        for estimator in ("binning", "kde"):
            trajectory = plane.trajectory(layer, estimator)
            for kind, p in key_points(trajectory).items():
                if kind == "convergence" and p.epoch == trajectory[-1].epoch:
                    kind += " (last epoch: not settled within the run)"
                points.append({**p.to_dict(), "point": kind})
    return {
        "rows": [r.to_dict() for r in study.rows],
        "budget": study.budget,
        "latency_batch": study.latency_batch,
        "plane": plane.to_dict(),
        "key_points": points,
        "train_images": len(fine_tune),
        "plane_train_images": len(plane_train),
        "test_images": len(test),
        "seconds": {"pruning": prune_seconds, "plane": time.perf_counter() - t0},
    }

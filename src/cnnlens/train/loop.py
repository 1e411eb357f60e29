"""The one training loop of cnnlens.

:func:`fit` trains any ``nn.Module`` on any data (a cnnlens data set, a torch
``Dataset`` or ``DataLoader``, or ``(x, y)`` tensors; see
:func:`~cnnlens.data.as_dataset`) with an
:class:`~cnnlens.train.objectives.Objective`: seeded data order and
augmentation per epoch (so a resumed run repeats an uninterrupted one
exactly), an lr schedule computed from the global step, evaluation each
epoch, early stopping, per-epoch callbacks, atomic checkpoints and resume.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.adapt import as_dataset
from ..data.base import ImageDataset, TensorDataset
from ..data.foreign import TensorPairs
from ..data.shapes import ShapesDataset
from ..errors import CheckpointError, ConfigError
from ..io import write_json
from ..placement import model_device
from ..progress import Progress, log_line
from .augment import augment
from .config import TrainConfig
from .objectives import Alternating, Classification, Objective, trainable_parameters
from .state import load_state, save_state

Callback = Callable[[int, nn.Module, dict], "dict | None"]


@dataclass
class TrainResult:
    """Per-epoch records (``history``), the best validation accuracy and its epoch."""

    history: list[dict] = field(default_factory=list)
    best_accuracy: float | None = None
    best_epoch: int | None = None
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def _targets(dataset: ImageDataset, kind: str) -> torch.Tensor:
    if kind == "label":
        return dataset.labels
    if kind == "attributes":
        if dataset.attributes is None:
            raise ConfigError(f"{dataset.name} has no attributes to train on")
        return dataset.attributes.float()
    raise ConfigError(f"targets must be 'label' or 'attributes', got {kind!r}")


def _batches(
    dataset: ImageDataset,
    targets: torch.Tensor,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised batches on ``device``; shuffled when a generator is given."""
    n = len(dataset)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    if isinstance(dataset, TensorDataset):
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            x = dataset.raw_batch(idx).to(device)
            yield dataset.normalize(x), targets[idx].to(device)
        return
    if isinstance(dataset, TensorPairs):  # in memory, already normalised
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield dataset.images[idx].to(device), targets[idx].to(device)
        return
    loader = DataLoader(
        torch.utils.data.Subset(dataset, order.tolist()), batch_size=batch_size, shuffle=False
    )
    for start, (x, _y) in zip(range(0, n, batch_size), loader, strict=False):
        yield x.to(device), targets[order[start : start + batch_size]].to(device)


def evaluate(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    objective: Objective | None = None,
    targets: str = "label",
    batch_size: int = 256,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on ``dataset`` (model mode restored)."""
    dataset = as_dataset(dataset)
    objective = objective or Classification("bce" if targets == "attributes" else "ce")
    device = model_device(model)
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    try:
        for x, y in _batches(dataset, _targets(dataset, targets), batch_size, device, None):
            for k, v in objective.eval_step(model, x, y).items():
                sums[k] = sums.get(k, 0.0) + v
    finally:
        model.train(was_training)
    count = max(sums.pop("count", 1.0), 1.0)
    return {"loss": sums.pop("loss", 0.0) / count, "accuracy": sums.pop("correct", 0.0) / count}


def object_removed_accuracy(model: nn.Module, test: ShapesDataset) -> tuple[float, float]:
    """(accuracy with the object, accuracy with it removed) of ``model`` on ``shapes`` images.

    With the object left out it is at chance when the background carries no class information.
    """
    with_object = evaluate(model, test)["accuracy"]
    without = evaluate(model, test.without_object())["accuracy"]
    return with_object, without


def fit(
    model: nn.Module,
    train: ImageDataset,
    val: ImageDataset | None = None,
    *,
    config: TrainConfig | None = None,
    objective: Objective | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    trainable: Sequence[str] | None = None,
    targets: str = "label",
    callbacks: Sequence[Callback] = (),
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` in place; return its per-epoch history.

    ``train`` and ``val`` are any data :func:`~cnnlens.data.as_dataset` accepts.

    ``trainable`` restricts training to named submodules (e.g. ``["head"]``);
    the other parameters are frozen and their BatchNorm statistics kept.
    ``targets="attributes"`` trains multi-label on the data set's attributes
    (use ``Classification("bce")``). With ``out``, every epoch is checkpointed
    under ``out/checkpoints`` and ``resume=True`` continues from the last one.
    """
    train = as_dataset(train)
    val = None if val is None else as_dataset(val)
    config = config or TrainConfig()
    objective = objective or Classification("bce" if targets == "attributes" else "ce")
    train_targets = _targets(train, targets)
    if isinstance(objective, Alternating):
        objective.bind(model)

    params = trainable_parameters(model, trainable)
    frozen_flags = [(p, p.requires_grad) for p in model.parameters()]
    chosen = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    frozen_modules = [] if trainable is None else _modules_outside(model, trainable)

    groups = objective.parameter_groups(params)
    configs = objective.optimizer_configs(config.optimizer)
    optimizers = {g: configs[g].build(ps) for g, ps in groups.items()}
    base_lrs = {g: [pg["lr"] for pg in opt.param_groups] for g, opt in optimizers.items()}

    steps_per_epoch = -(-len(train) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    result = TrainResult()
    start_epoch = 1
    ckpt_dir = Path(out) / "checkpoints" if out is not None else None
    # compared after a JSON round trip, as it is stored (tuples become lists)
    run_facts = json.loads(
        json.dumps({"config": config.to_dict(), "trainable": list(trainable or [])})
    )

    # what a checkpoint needs to be understood on its own
    model_facts = json.loads(
        json.dumps(
            {
                "arch": getattr(model, "arch", None),
                "classes": list(train.classes),
                "mean": list(train.mean),
                "std": list(train.std),
            },
            default=str,
        )
    )

    if resume and ckpt_dir is not None:
        state = load_state(ckpt_dir)
        if state is not None:
            if state.get("config") != run_facts["config"]:
                raise ConfigError(
                    f"cannot resume from {ckpt_dir}: it was trained with another configuration"
                )
            try:
                model.load_state_dict(state["model"])
                for g, opt in optimizers.items():
                    opt.load_state_dict(state["optimizers"][g])
            except (RuntimeError, KeyError, ValueError) as exc:  # another model's checkpoint
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise CheckpointError(
                    f"cannot resume from {ckpt_dir}: it does not fit this model ({reason})"
                ) from None
            result.history = state["history"]
            start_epoch = state["epoch"] + 1
            _update_best(result)

    t0 = time.perf_counter()
    patience_left = config.patience
    best_state = None
    run = _Run(
        model,
        train,
        train_targets,
        objective,
        optimizers,
        base_lrs,
        config,
        steps_per_epoch,
        total_steps,
        frozen_modules,
        desc,
    )
    # Denormal floats (|x| < 1.2e-38) are slow on x86: sigmoid attention masks driven toward 0
    # by an L1 term made each epoch of the attribute network slower, 133 s -> 306 s by epoch 6
    # (paper 003's recipe); flushed to zero, a step ran 1.5x faster. Off again afterwards.
    flushing = torch.set_flush_denormal(True)  # False where the CPU cannot
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            record = _train_epoch(run, epoch)
            if val is not None:
                metrics = evaluate(
                    model,
                    val,
                    objective=objective,
                    targets=targets,
                    batch_size=config.eval_batch_size,
                )
                record["val_loss"], record["val_accuracy"] = metrics["loss"], metrics["accuracy"]
            for callback in callbacks:
                extra = callback(epoch, model, record)
                if extra:
                    record.update(extra)
            result.history.append(record)
            improved = _update_best(result)
            _log_epoch(desc, record, config.epochs)
            if config.patience and improved:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if ckpt_dir is not None:
                save_state(
                    ckpt_dir,
                    epoch=epoch,
                    model=model,
                    optimizers=optimizers,
                    history=result.history,
                    extra={**run_facts, **model_facts},
                )
            if config.patience and val is not None:
                patience_left = config.patience if improved else patience_left - 1
                if patience_left <= 0 and epoch < config.epochs:
                    result.stopped_early = True
                    break
    finally:
        if flushing:
            torch.set_flush_denormal(False)
        for p, flag in frozen_flags:
            p.requires_grad_(flag)
    if best_state is not None and result.stopped_early:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - t0
    if out is not None:
        write_json(Path(out) / "history.json", result.history)
    return result


def _modules_outside(model: nn.Module, trainable: Sequence[str]) -> list[nn.Module]:
    """Leaf modules not under any trainable submodule (kept in eval mode while training)."""
    modules = dict(model.named_modules())
    inside = {id(sub) for name in trainable if name in modules for sub in modules[name].modules()}
    return [m for m in model.modules() if id(m) not in inside and not list(m.children())]


def _update_best(result: TrainResult) -> bool:
    last = result.history[-1] if result.history else {}
    acc = last.get("val_accuracy")
    if acc is None:
        return False
    if result.best_accuracy is None or acc > result.best_accuracy:
        result.best_accuracy, result.best_epoch = acc, last["epoch"]
        return True
    return False


@dataclass
class _Run:
    """What stays fixed across the epochs of one :func:`fit` call."""

    model: nn.Module
    dataset: ImageDataset
    targets: torch.Tensor
    objective: Objective
    optimizers: dict[str, torch.optim.Optimizer]
    base_lrs: dict[str, list[float]]
    config: TrainConfig
    steps_per_epoch: int
    total_steps: int
    frozen_modules: list[nn.Module]
    desc: str


def _train_epoch(run: _Run, epoch: int) -> dict:
    model, config, optimizers = run.model, run.config, run.optimizers
    seed = config.seed * 100_003 + epoch
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.train()
    for m in run.frozen_modules:
        m.eval()
    device = model_device(model)
    sums: dict[str, float] = {}
    t0 = time.perf_counter()
    step = (epoch - 1) * run.steps_per_epoch
    with Progress(len(run.dataset), f"{run.desc} {epoch}/{config.epochs}") as bar:
        for x, y in _batches(run.dataset, run.targets, config.batch_size, device, generator):
            factor = config.lr_factor(step, run.total_steps, run.steps_per_epoch)
            for g, opt in optimizers.items():
                for pg, lr in zip(opt.param_groups, run.base_lrs[g], strict=True):
                    pg["lr"] = lr * factor
            if config.augment:
                x = augment(x, config.augment, generator)
            stats = run.objective.train_step(model, x, y, optimizers)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            step += 1
            count = max(sums.get("count", 1.0), 1.0)
            shown = {"loss": sums["loss"] / count}
            if "correct" in sums:  # an objective without classes (a VAE's ELBO) has no accuracy
                shown["acc"] = sums["correct"] / count
            bar.update(len(x), **shown)
    count = max(sums.pop("count", 1.0), 1.0)
    record = {"epoch": epoch, "train_loss": sums.pop("loss") / count}
    if "correct" in sums:
        record["train_accuracy"] = sums.pop("correct") / count
    record["lr"] = next(iter(optimizers.values())).param_groups[0]["lr"]
    record["seconds"] = time.perf_counter() - t0
    record.update({k: v / count for k, v in sums.items()})
    return record


def _log_epoch(desc: str, record: dict, epochs: int) -> None:
    text = f"{desc} epoch {record['epoch']}/{epochs}: loss {record['train_loss']:.4f}"
    if "train_accuracy" in record:
        text += f" acc {record['train_accuracy']:.4f}"
    if "val_accuracy" in record:
        text += f" | val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.4f}"
    log_line(text + f" | {record['seconds']:.1f}s")

"""What a training run is told: optimiser, schedule, augmentation, stopping."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from ..errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "onecycle", "step", "constant")


@dataclass
class OptimizerConfig:
    """One optimiser: SGD with (Nesterov) momentum, Adam or AdamW."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.name!r}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must lie in [0, 1), got {self.momentum}")

    def build(self, params) -> torch.optim.Optimizer:
        params = list(params)
        if not params:
            raise ConfigError("no trainable parameters were given to the optimizer")
        if self.name == "sgd":
            return torch.optim.SGD(
                params,
                lr=self.lr,
                momentum=self.momentum,
                nesterov=self.nesterov and self.momentum > 0,
                weight_decay=self.weight_decay,
            )
        cls = torch.optim.Adam if self.name == "adam" else torch.optim.AdamW
        return cls(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)


@dataclass
class TrainConfig:
    """Everything about a run except the model, data and objective.

    ``schedule`` scales every optimiser's base lr by a factor of the global
    step: ``cosine`` (to 0 over the run), ``onecycle`` (linear warm-up over
    ``warmup`` of the run from lr/25, then cosine to lr/1e4), ``step``
    (x ``gamma`` every ``step_epochs``) or ``constant``. ``augment`` holds
    ``"flip"`` (horizontal) and/or ``"crop"`` (pad 4 + random crop).
    ``patience`` stops after that many epochs without a better validation
    accuracy (0 = never).
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: str = "cosine"
    warmup: float = 0.15
    step_epochs: int = 30
    gamma: float = 0.1
    augment: tuple[str, ...] = ("flip", "crop")
    patience: int = 0
    seed: int = 0
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0 (0: no early stopping), got {self.patience}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        unknown = set(self.augment) - {"flip", "crop"}
        if unknown:
            raise ConfigError(f"unknown augmentation {sorted(unknown)}; use 'flip' and/or 'crop'")
        self.augment = tuple(self.augment)

    def lr_factor(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        """Multiplier of the base learning rate at global ``step``."""
        t = min(step / max(total_steps, 1), 1.0)
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if self.schedule == "onecycle":
            if t < self.warmup:
                return 1 / 25 + (1 - 1 / 25) * t / self.warmup
            rest = (t - self.warmup) / max(1 - self.warmup, 1e-12)
            return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * rest))
        if self.schedule == "step":
            return self.gamma ** (step // max(steps_per_epoch * self.step_epochs, 1))
        return 1.0

    def to_dict(self) -> dict:
        return asdict(self)

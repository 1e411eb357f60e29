"""Training a gated network (paper 000, section 3.1, Eq. 3; Wang et al. 2020, section 3.3).

Two phases, both through :func:`cnnlens.train.fit`:

1. gating, with :class:`~cnnlens.train.Alternating` per batch: (a) Adam
   (lr 0.01) on heads and masks with ``CE + lambda (mean |selected masks| - s)^2``
   (mean over batch, gated layers and channels; ``lambda`` 0.5, target density
   ``s`` 0.7), then masks clamped to ``[0, 5]`` and head rows renormalised;
   (b) a fresh forward with a new Gumbel sample and SGD (lr 0.01, momentum 0.9)
   on the backbone with CE only;
2. fine-tuning of the backbone with decisions fixed (argmax) and heads and
   masks frozen.

Both phases take the same per-epoch ``callbacks`` as :func:`cnnlens.train.fit`
(:func:`phased`): each sees ``record["phase"]`` (``"gates"`` or ``"fine-tune"``) and
``record["phase_epoch"]``, and an epoch counted over both phases (fine-tune epoch ``e``
is ``gate_epochs + e``), so a callback such as
:class:`~cnnlens.studies.drib.information_plane.InformationPlane` draws one trajectory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import ConfigError
from ...train import Alternating, Classification, Objective, OptimizerConfig, TrainConfig, fit
from ...train.loop import Callback, TrainResult
from .gate import gate_parameter_names, gated_layers, set_mode

GATE_OPTIMIZER = OptimizerConfig(name="adam", lr=0.01, weight_decay=0.0)
BACKBONE_OPTIMIZER = OptimizerConfig(
    name="sgd", lr=0.01, momentum=0.9, nesterov=False, weight_decay=5e-4
)


def selected_density(model: nn.Module) -> torch.Tensor:
    """Mean ``|selected mask|`` of the last forward over batch, gated layers and channels."""
    masks = [g.last_mask for g in gated_layers(model).values()]
    if any(m is None for m in masks):
        raise ConfigError("selected_density needs a forward of the gated model first")
    return torch.cat([m.abs().flatten() for m in masks]).mean()


PENALTIES = ("target", "l1")


class GateLoss(Objective):
    """The gates' objective: ``CE + lambda (mean |selected masks| - density)^2`` (the
    target-density loss of Wang et al. 2020, ``penalty="target"``; paper 000 gives no
    loss) or ``CE + lambda mean |selected masks|`` (``"l1"``).

    Why ``"l1"`` exists: with BatchNorm after the next conv, the network absorbs a uniform
    scale of a layer's masks, so the target penalty is met by shrinking every mask entry a
    little instead of zeroing some (measured here: mean |mask| 0.41, no exact zeros, after
    two epochs on ``shapes``). An L1 pull moves every entry the cross-entropy does not
    defend towards the clamp at 0, which is what saves MACs.
    """

    def __init__(self, *, lam: float = 0.5, density: float = 0.7, penalty: str = "target") -> None:
        if not lam >= 0:
            raise ConfigError(f"lambda must be >= 0, got {lam}")
        if not 0 <= density <= 5:
            raise ConfigError(f"target density must lie in [0, 5] (the mask range), got {density}")
        if penalty not in PENALTIES:
            raise ConfigError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
        self.lam, self.density, self.penalty = float(lam), float(density), penalty
        self.ce = Classification()

    def loss(self, model, x, y):
        loss, stats = self.ce.loss(model, x, y)
        d = selected_density(model)
        stats["density"] = float(d.detach()) * len(x)
        term = (d - self.density) ** 2 if self.penalty == "target" else d
        return loss + self.lam * term, stats


def _project(model: nn.Module) -> None:
    for g in gated_layers(model).values():
        g.project()


@dataclass
class GateRecipe:
    """Epochs and rates of both phases (lr 0.01 and batch 128 as paper 000 states; short runs
    by default)."""

    gate_epochs: int = 4
    finetune_epochs: int = 2
    batch_size: int = 128
    lam: float = 0.5
    density: float = 0.7
    tau: float = 1.0
    penalty: str = "target"
    gate_lr: float = 0.01
    backbone_lr: float = 0.01
    finetune_lr: float = 0.01
    augment: tuple[str, ...] = ("crop",)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.gate_epochs < 1 or self.finetune_epochs < 0:
            raise ConfigError("gate_epochs must be >= 1 and finetune_epochs >= 0")
        for name in ("tau", "gate_lr", "backbone_lr", "finetune_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.penalty not in PENALTIES:
            raise ConfigError(f"penalty must be one of {PENALTIES}, got {self.penalty!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def gating_objective(model: nn.Module, recipe: GateRecipe) -> Alternating:
    """The alternating objective of phase 1 for ``model``'s gates."""
    names = gate_parameter_names(model)
    return Alternating(
        {
            "gates": (
                lambda n: n in names,
                dataclasses.replace(GATE_OPTIMIZER, lr=recipe.gate_lr),
            ),
            "backbone": (
                lambda n: n not in names,
                dataclasses.replace(BACKBONE_OPTIMIZER, lr=recipe.backbone_lr),
            ),
        },
        base=GateLoss(lam=recipe.lam, density=recipe.density, penalty=recipe.penalty),
        losses={"backbone": Classification()},
        after_step={"gates": _project},
    )


PHASES = ("gates", "fine-tune")


def phased(callbacks: Sequence[Callback], phase: str, offset: int = 0) -> list[Callback]:
    """``callbacks`` for one phase of :func:`train_gated`: each epoch's record gets
    ``phase`` and ``phase_epoch`` (kept in the history), and each callback is called with
    the epoch counted over both phases (``offset`` + the phase's epoch)."""
    if phase not in PHASES:
        raise ConfigError(f"phase must be one of {PHASES}, got {phase!r}")

    def wrap(callback: Callback) -> Callback:
        def call(epoch: int, model: nn.Module, record: dict):
            record["phase"], record["phase_epoch"] = phase, epoch
            return callback(offset + epoch, model, record)

        return call

    for callback in callbacks:
        if not callable(callback):
            raise ConfigError(f"a callback must be callable, got {type(callback).__name__}")
    return [wrap(c) for c in callbacks]


def train_gated(
    model: nn.Module,
    train,
    val=None,
    *,
    recipe: GateRecipe | None = None,
    callbacks: Sequence[Callback] = (),
    desc: str = "drib",
) -> tuple[TrainResult, TrainResult | None]:
    """Run both phases on a gated ``model`` in place; returns their histories.

    ``train`` / ``val``: any data :func:`~cnnlens.data.as_dataset` accepts.
    ``callbacks``: per-epoch callbacks of :func:`cnnlens.train.fit`, called in both
    phases (see :func:`phased` for the phase and epoch they see).
    """
    recipe = recipe or GateRecipe()
    gated_layers(model)
    torch.manual_seed(recipe.seed)
    config = TrainConfig(
        epochs=recipe.gate_epochs,
        batch_size=recipe.batch_size,
        schedule="constant",
        augment=recipe.augment,
        seed=recipe.seed,
    )
    set_mode(model, fixed=False, tau=recipe.tau)
    gating = fit(
        model,
        train,
        val,
        config=config,
        objective=gating_objective(model, recipe),
        callbacks=phased(callbacks, "gates"),
        desc=f"{desc} gates",
    )
    finetune = None
    if recipe.finetune_epochs:
        finetune = finetune_fixed(
            model,
            train,
            val,
            recipe=recipe,
            callbacks=phased(callbacks, "fine-tune", len(gating.history)),
            desc=desc,
        )
    model.eval()
    return gating, finetune


def finetune_fixed(
    model,
    train,
    val=None,
    *,
    recipe: GateRecipe,
    callbacks: Sequence[Callback] = (),
    desc: str = "drib",
):
    """Phase 2: backbone SGD on CE with argmax decisions; heads and masks frozen.
    ``callbacks``: passed to :func:`cnnlens.train.fit` as they are."""
    names = gate_parameter_names(model)
    frozen = [p for n, p in model.named_parameters() if n in names]
    flags = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    set_mode(model, fixed=True)
    config = TrainConfig(
        epochs=recipe.finetune_epochs,
        batch_size=recipe.batch_size,
        optimizer=dataclasses.replace(BACKBONE_OPTIMIZER, lr=recipe.finetune_lr),
        schedule="cosine",
        augment=recipe.augment,
        seed=recipe.seed + 1,
    )
    try:
        return fit(model, train, val, config=config, callbacks=callbacks, desc=f"{desc} fine-tune")
    finally:
        for p, flag in zip(frozen, flags, strict=True):
            p.requires_grad_(flag)


# The demo's recipe (report section "Dynamic channel gating") and the one measured for the
# issue's closing note: the L1 pull with a higher gate lr, because in a few epochs the
# target penalty (Wang et al. 2020's) shrinks masks uniformly instead of zeroing entries (GateLoss).
DEMO_RECIPE = GateRecipe(
    gate_epochs=2, finetune_epochs=2, lam=5.0, penalty="l1", gate_lr=0.1, density=0.0
)

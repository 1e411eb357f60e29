"""Objectives: how one batch becomes losses and parameter updates.

The loop in :mod:`cnnlens.train.loop` owns epochs, data order, schedules,
evaluation, checkpoints and progress; an objective owns one step. New kinds
of training (dynamic channel gating, attention masks, a VAE's ELBO) add an
objective, never a copy of the loop.

Extra loss terms come from the model: any submodule with an ``extra_loss()``
method (returning a scalar tensor for its last forward, or ``None``) adds it
to the loss, e.g. a gate's sparsity penalty or an attention mask's L1 norm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .config import OptimizerConfig


def model_extra_loss(model: nn.Module) -> torch.Tensor | None:
    """Sum of ``extra_loss()`` over submodules that define it (``None`` if none do)."""
    terms = []
    for module in model.modules():
        fn = getattr(module, "extra_loss", None)
        if callable(fn) and module is not model:
            term = fn()
            if term is not None:
                terms.append(term)
    return torch.stack([t.reshape(()) for t in terms]).sum() if terms else None


class Objective:
    """Base class. Subclasses define :meth:`loss`; most keep the rest.

    ``parameter_groups`` names the parameters each optimiser updates and
    ``optimizer_configs`` how each optimiser is built (default: the run's).
    """

    def parameter_groups(self, params: list[nn.Parameter]) -> dict[str, list[nn.Parameter]]:
        return {"main": params}

    def optimizer_configs(self, default: OptimizerConfig) -> dict[str, OptimizerConfig]:
        return {"main": default}

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Mean loss of the batch and sums for reporting (``correct``, ``count``, ...)."""
        raise NotImplementedError

    def train_step(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
    ) -> dict[str, float]:
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss, stats = self.loss(model, x, y)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
        return {"loss": float(loss.detach()) * len(x), **stats}

    @torch.no_grad()
    def eval_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        loss, stats = self.loss(model, x, y)
        return {"loss": float(loss) * len(x), **stats}


class Classification(Objective):
    """Cross-entropy (``loss="ce"``, integer targets) or multi-label BCE
    (``loss="bce"``, ``[N,A]`` 0/1 targets) on the model's logits, plus the
    model's extra loss terms and an optional ``extra(model, x, y, logits)``.
    """

    def __init__(
        self,
        loss: str = "ce",
        *,
        label_smoothing: float = 0.0,
        extra: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
        | None = None,
    ) -> None:
        if loss not in ("ce", "bce"):
            raise ConfigError(f"loss must be 'ce' or 'bce', got {loss!r}")
        self.kind, self.label_smoothing, self.extra = loss, label_smoothing, extra

    def loss(self, model, x, y):
        logits = model(x)
        if self.kind == "ce":
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            correct = float((logits.argmax(1) == y).sum())
        else:
            target = y.float()
            loss = F.binary_cross_entropy_with_logits(logits, target)
            correct = float(((logits > 0) == (target > 0.5)).float().mean(1).sum())
        extra = model_extra_loss(model)
        if extra is not None:
            loss = loss + extra
        if self.extra is not None:
            loss = loss + self.extra(model, x, y, logits)
        return loss, {"correct": correct, "count": float(len(x))}


class Alternating(Objective):
    """Alternate updates of parameter groups with their own optimisers, in one batch.

    For each group in order: a fresh forward of the whole model, the base
    objective's loss, backward, and a step of that group's optimiser only
    (e.g. gate parameters with Adam, then the backbone with SGD, as dynamic
    channel gating trains). ``groups`` maps a name to a predicate on the
    parameter name and an optimiser configuration (``None``: the run's).
    ``losses`` gives a group its own objective (default ``base``; e.g. the
    backbone on cross-entropy only while the gates also pay a sparsity term);
    ``after_step`` maps a group to ``fn(model)`` run after its optimiser step
    (e.g. clamping masks, renormalising rows). Evaluation uses ``base``.
    """

    def __init__(
        self,
        groups: dict[str, tuple[Callable[[str], bool], OptimizerConfig | None]],
        base: Objective | None = None,
        *,
        losses: dict[str, Objective] | None = None,
        after_step: dict[str, Callable[[nn.Module], None]] | None = None,
    ) -> None:
        if len(groups) < 2:
            raise ConfigError("Alternating needs at least two parameter groups")
        for label, given in (("losses", losses), ("after_step", after_step)):
            unknown = set(given or {}) - set(groups)
            if unknown:
                raise ConfigError(f"Alternating {label} name unknown groups {sorted(unknown)}")
        self.groups = groups
        self.base = base or Classification()
        self.losses = dict(losses or {})
        self.after_step = dict(after_step or {})
        self._names: dict[int, str] = {}

    def bind(self, model: nn.Module) -> None:
        self._names = {id(p): n for n, p in model.named_parameters()}

    def parameter_groups(self, params):
        out: dict[str, list[nn.Parameter]] = {g: [] for g in self.groups}
        for p in params:
            name = self._names.get(id(p), "")
            owner = next((g for g, (pick, _c) in self.groups.items() if pick(name)), None)
            if owner is None:
                raise ConfigError(f"parameter {name!r} belongs to no group of Alternating")
            out[owner].append(p)
        empty = [g for g, ps in out.items() if not ps]
        if empty:
            raise ConfigError(f"Alternating groups {empty} select no parameters")
        return out

    def optimizer_configs(self, default):
        return {g: cfg or default for g, (_pick, cfg) in self.groups.items()}

    def loss(self, model, x, y):
        return self.base.loss(model, x, y)

    def train_step(self, model, x, y, optimizers):
        result: dict[str, float] = {}
        for group in self.groups:
            for opt in optimizers.values():
                opt.zero_grad(set_to_none=True)
            loss, stats = self.losses.get(group, self.base).loss(model, x, y)
            loss.backward()
            optimizers[group].step()
            if group in self.after_step:
                self.after_step[group](model)
            result = {**result, "loss": float(loss.detach()) * len(x), **stats}
            result[f"loss_{group}"] = float(loss.detach()) * len(x)
        return result


def trainable_parameters(model: nn.Module, only: Iterable[str] | None) -> list[nn.Parameter]:
    """Parameters to train: all with ``requires_grad``, or those under the named submodules."""
    if only is None:
        return [p for p in model.parameters() if p.requires_grad]
    prefixes = tuple(only)
    chosen = [
        p
        for n, p in model.named_parameters()
        if any(n == pre or n.startswith(pre + ".") for pre in prefixes)
    ]
    if not chosen:
        raise ConfigError(f"no parameters under {list(prefixes)} to train")
    return chosen

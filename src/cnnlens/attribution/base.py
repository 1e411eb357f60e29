"""The contract every attribution method keeps.

A method is a small object: ``Method(model, **hyperparameters)`` then
``method(inputs, target=None) -> Explanation``. The base class checks the
inputs and the target, runs :meth:`Method.attribute` with the model frozen
(eval mode, parameters not requiring gradients; everything restored after,
also on an error) and packs the result. Subclasses implement ``attribute``
only, and run every sampled/stepped computation through
:mod:`cnnlens.chunking`.

Hyperparameter vocabulary shared by all methods: ``steps``, ``samples``,
``noise``, ``baseline``, ``layer``, ``at``, ``seed``, ``batch_size``,
``window``, ``stride``, ``n_masks``, ``s``, ``p1``, ``n_samples``,
``segments``, ``iterations``, ``area``, ``beta``.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InputError, TargetError
from ..hooks import frozen
from ..types import Explanation


def check_inputs(inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` must be a finite floating ``[N,C,H,W]`` tensor."""
    if not isinstance(inputs, torch.Tensor):
        raise InputError(f"inputs must be a torch.Tensor [N,C,H,W], got {type(inputs).__name__}")
    if inputs.dim() != 4:
        raise InputError(f"inputs must be [N,C,H,W], got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise InputError(f"inputs must be floating point (normalised images), got {inputs.dtype}")
    if inputs.shape[0] == 0:
        raise InputError("inputs hold no image (N = 0)")
    if not torch.isfinite(inputs).all():
        bad = int((~torch.isfinite(inputs)).flatten(1).any(1).sum())
        raise InputError(f"inputs contain NaN or infinite values in {bad} image(s)")
    return inputs


def resolve_target(
    model: nn.Module, inputs: torch.Tensor, target: int | torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets ``[N]`` (long, on the inputs' device) and the logits of ``inputs``.

    ``None`` means the predicted class; an ``int`` applies to every image; a
    tensor must hold one class per image. Out-of-range classes raise
    :class:`TargetError`.
    """
    with torch.no_grad():
        logits = model(inputs)
    if logits.dim() != 2:
        raise InputError(f"the model must return logits [N,K], got shape {tuple(logits.shape)}")
    n, k = logits.shape
    if target is None:
        return logits.argmax(1), logits
    if isinstance(target, int) and not isinstance(target, bool):
        t = torch.full((n,), target, dtype=torch.long, device=inputs.device)
    elif isinstance(target, torch.Tensor):
        t = target.to(inputs.device).long().flatten()
        if t.numel() == 1 and n > 1:
            t = t.expand(n).clone()
        if t.numel() != n:
            raise TargetError(f"target must hold one class per image ({n}), got {t.numel()}")
    else:
        raise TargetError(
            f"target must be None, an int or a tensor [N], got {type(target).__name__}"
        )
    if int(t.min()) < 0 or int(t.max()) >= k:
        raise TargetError(
            f"target classes must lie in [0, {k}) for this model, got {t.unique().tolist()}"
        )
    return t, logits


def check_hyperparameters(method: str, given: dict[str, Any], valid: frozenset[str]) -> None:
    """An :class:`InputError` naming each unknown hyperparameter, with the closest valid one."""
    unknown = [k for k in given if k not in valid]
    if not unknown:
        return
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, sorted(valid), n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise InputError(
        f"{method} has no hyperparameter {', '.join(hints)}; "
        f"valid: {', '.join(sorted(valid)) or 'none'}"
    )


class Method:
    """Base class of attribution methods (see the module docstring).

    Class attributes: ``name`` (registry name), ``description`` (one line),
    ``pixel_space`` (``True`` when maps live on the input and ``raw`` holds
    per-channel attributions).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    pixel_space: ClassVar[bool] = True
    hyperparameters: ClassVar[frozenset[str] | None] = None  # None: not declared

    def __init__(self, model: nn.Module, **hyperparameters: Any) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        valid = self.accepted(hyperparameters)
        if valid is not None:
            check_hyperparameters(self.name, hyperparameters, valid)
        self.model = model
        self.params = hyperparameters

    @classmethod
    def accepted(cls, params: dict[str, Any] | None = None) -> frozenset[str] | None:
        """Hyperparameter names this method takes (``None``: any); ``params`` may
        change the answer (SmoothGrad takes its base method's names too)."""
        return cls.hyperparameters

    def __call__(
        self, inputs: torch.Tensor, target: int | torch.Tensor | None = None
    ) -> Explanation:
        inputs = check_inputs(inputs)
        device = next(self.model.parameters(), torch.empty(0)).device
        inputs = inputs.to(device)
        with frozen(self.model):
            targets, logits = resolve_target(self.model, inputs, target)
            explanation = self.attribute(inputs, targets, logits)
        explanation.maps = explanation.maps.float()
        return explanation

    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor, logits: torch.Tensor
    ) -> Explanation:
        """Compute the explanation; the model is already frozen and in eval mode."""
        raise NotImplementedError

    def explanation(
        self,
        maps: torch.Tensor,
        target: torch.Tensor,
        *,
        raw: torch.Tensor | None = None,
        **extras: torch.Tensor,
    ) -> Explanation:
        """Pack a result with this method's name and hyperparameters."""
        return Explanation(
            maps=maps.detach(),
            target=target,
            method=self.name,
            params=dict(self.params),
            raw=None if raw is None else raw.detach(),
            extras={k: v.detach() for k, v in extras.items()},
        )

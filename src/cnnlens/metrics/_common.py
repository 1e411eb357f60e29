"""Shared checks and tensor helpers for the metrics (ranks, AUC, scaled defaults)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..attribution.base import resolve_target
from ..errors import InputError
from ..types import Explanation

REFERENCE_SIZE = 224  # the papers' image side; defaults for other sizes scale from it


def scaled(value_at_224: float, size: int, *, minimum: int = 1) -> int:
    """``value_at_224`` scaled to an image side of ``size`` px, rounded, at least ``minimum``."""
    return max(minimum, int(round(value_at_224 * size / REFERENCE_SIZE)))


def check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_inputs(inputs, model: nn.Module | None = None) -> torch.Tensor:
    """Finite float ``[N,C,H,W]`` inputs that ``model`` (when given) takes."""
    from ..attribution.base import check_inputs as _check

    return _check(inputs, model)


def as_maps(maps, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """``maps`` (tensor or :class:`Explanation`) as a finite float ``[N,1,H,W]`` tensor.

    With ``like`` (the inputs ``[N,C,H,W]``) N, H and W must match and the
    maps move to its device.
    """
    if isinstance(maps, Explanation):
        maps = maps.maps
    if not isinstance(maps, torch.Tensor):
        raise InputError(f"maps must be a tensor [N,1,H,W], got {type(maps).__name__}")
    if maps.dim() == 3:
        raise InputError(
            f"maps must be [N,1,H,W], got shape {tuple(maps.shape)} (add a channel: maps[:, None])"
        )
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise InputError(f"maps must be [N,1,H,W], got shape {tuple(maps.shape)}")
    if maps.shape[0] == 0:
        raise InputError("maps hold no image (N = 0)")
    maps = maps.detach().float()
    if not torch.isfinite(maps).all():
        raise InputError("maps contain NaN or infinite values")
    if like is not None:
        n, _c, h, w = like.shape
        if maps.shape[0] != n or tuple(maps.shape[2:]) != (h, w):
            raise InputError(
                f"maps {tuple(maps.shape)} do not match inputs {tuple(like.shape)}: "
                f"expected [{n},1,{h},{w}]"
            )
        maps = maps.to(like.device)
    return maps


def descending_rank(maps: torch.Tensor) -> torch.Tensor:
    """Rank ``[N,HW]`` of every pixel when sorted by descending value (0 = most salient).

    Ties are broken by pixel index (stable sort), so the order is deterministic.
    """
    flat = maps.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    rank.scatter_(1, order, positions)
    return rank


def auc(curves: torch.Tensor) -> torch.Tensor:
    """RISE's area under ``[N,S]`` curves on ``[0, 1]``: ``(sum s - s_0/2 - s_n/2) / n``."""
    n = curves.shape[1] - 1
    if n < 1:
        return curves[:, 0].clone()
    return (curves.sum(1) - curves[:, 0] / 2 - curves[:, -1] / 2) / n


def class_score(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """The target's softmax probability (``"probability"``) or logit (``"logit"``)."""
    if kind == "probability":
        return logits.softmax(1).gather(1, target[:, None])[:, 0]
    if kind == "logit":
        return logits.gather(1, target[:, None])[:, 0]
    raise InputError(f"score must be 'probability' or 'logit', got {kind!r}")


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / b))


def checked_targets(model: nn.Module, inputs: torch.Tensor, target, *, need_logits: bool):
    """Targets ``[N]``, the logits of ``inputs`` (or None) and the class count. Given
    targets and no need of the logits, the N forwards are skipped: one forward of one
    image gives the class count the targets are checked against (:func:`resolve_target`'s
    checks and messages)."""
    if need_logits or target is None:
        t, logits = resolve_target(model, inputs, target)
        return t, logits, logits.shape[1]
    with torch.no_grad():
        k = model(inputs[:1]).shape[-1]
    t, _ = resolve_target(lambda x: x.new_zeros(len(x), k), inputs, target)
    return t, None, k

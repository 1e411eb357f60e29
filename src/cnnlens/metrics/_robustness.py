"""Shared machinery of the robustness metrics: explain many perturbed copies of each
image in chunks (:func:`cnnlens.chunking.run_chunked`), one explainer call per chunk.

Perturbation ``s`` of image ``i`` is pair ``j = i * samples + s``; ``perturb(img, s)``
builds the perturbed images of a chunk from the indices alone (noise draw ``s`` is the
same seeded draw for every image, :class:`cnnlens.seeding.Draws`), so an image's score
does not depend on the other images of the call or on the chunk size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..chunking import chunk_size, run_chunked
from ..errors import InputError
from ..hooks import frozen
from ..placement import model_device
from ..types import Explanation
from ._common import as_maps, check_inputs, check_model, checked_targets


@dataclass
class Perturbed:
    """What ``score`` sees for a chunk: image indices ``img`` ``[B]``, the perturbed
    images, their maps and (with ``logits=True``) their logits; and for the whole
    call the inputs, their maps ``base``, their logits ``logits0`` (with
    ``logits=True`` or no target given; else None) and the targets."""

    img: torch.Tensor
    x: torch.Tensor
    maps: torch.Tensor
    logits: torch.Tensor | None
    inputs: torch.Tensor
    base: torch.Tensor
    logits0: torch.Tensor | None
    target: torch.Tensor


def positive_number(name: str, value, *, integer: bool = False) -> None:
    """Raise :class:`InputError` unless ``value`` is a finite number > 0 (an int if asked)."""
    kinds = int if integer else int | float
    if (
        not isinstance(value, kinds)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        kind = "a positive integer" if integer else "a number > 0"
        raise InputError(f"{name} must be {kind}, got {value!r}")


def explain_perturbed(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target,
    method,
    method_params: dict,
    *,
    name: str,
    samples: int,
    perturb: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    score: Callable[[Perturbed], torch.Tensor],
    logits: bool = False,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``score`` of every (image, perturbation) pair as ``[N, samples]``, the targets and
    the method's name. ``perturb(inputs, img, s)`` returns the perturbed images of pairs
    ``(img, s)``; ``maps`` (of ``inputs``) is computed when ``None``; an
    :class:`Explanation` supplies the method, its parameters and targets."""
    from .sensitivity import explainer

    model = check_model(model)
    inputs = check_inputs(inputs, model).to(model_device(model))
    if isinstance(maps, Explanation):
        if method is None:
            method = maps.method
            method_params = {**maps.params, **method_params}
        target = maps.target if target is None else target
    if method is None:
        raise InputError(f"{name} needs method= (a registered name or a callable)")
    positive_number("samples", samples, integer=True)
    explain_fn = explainer(method, dict(method_params))
    n = inputs.shape[0]
    with frozen(model):
        target, logits0, _k = checked_targets(model, inputs, target, need_logits=logits)
        if maps is None:
            maps = explain_fn(model, inputs, target)
        base = as_maps(maps, like=inputs)
        size = balanced(
            n * samples, chunk_size(model, inputs, backward=True, batch_size=batch_size,
                                    memory=memory),
        )  # fmt: skip

        def run(a: int, b: int) -> torch.Tensor:
            j = torch.arange(a, b, device=inputs.device)
            img, s = j // samples, j % samples
            x = perturb(inputs, img, s)
            moved = as_maps(explain_fn(model, x, target[img]), like=x)
            out = None
            if logits:
                with torch.no_grad():
                    out = model(x)
            return score(Perturbed(img, x, moved, out, inputs, base, logits0, target))

        values = run_chunked(run, n * samples, size, desc=desc).view(n, samples)
    label = method if isinstance(method, str) else getattr(method, "__name__", "custom")
    return values, target, label


def balanced(total: int, size: int) -> int:
    """The chunk size that runs ``total`` items in as few chunks as ``size`` does, with
    chunks of equal size (40 items at most 32 a chunk: two of 20, not 32 and 8, whose
    small chunk runs slower per item)."""
    chunks = -(-total // size)
    return -(-total // chunks)

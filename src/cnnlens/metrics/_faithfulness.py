"""Shared steps of the perturbation faithfulness metrics (correlation, estimate,
monotonicity, IROF, selectivity): checked inputs, the class score of many perturbed
images in chunks, pixel groups in saliency order, row-wise Pearson correlation.

Features are pixels: all channels of a pixel move together and a pixel's attribution
is its ``[N,1,H,W]`` map value (Quantus broadcasts the map over the channels and moves
each channel-feature on its own; the two agree on one-channel images).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..accel import forward_runner
from ..attribution.base import resolve_target
from ..chunking import chunk_size, run_chunked
from ..errors import InputError
from ..params import Param
from ..placement import model_device
from ..types import Explanation
from ._common import as_maps, check_inputs, check_model, class_score
from .causal import _baseline

SCORE = Param("str", "probability", choices=("probability", "logit"))
FILL = Param("float|tensor", 0.0, choices=("zero", "blur", "mean"), help="value of removed pixels")
STEP = Param("int", None, min=1, none=True, help="pixels per step; none: 0.9 % of the image")


def prepare(
    model: nn.Module, inputs: torch.Tensor, maps, target
) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked model, inputs on its device, maps ``[N,1,H,W]``, targets ``[N]`` and logits.

    Call inside :func:`cnnlens.hooks.frozen` (the target needs a forward)."""
    model = check_model(model)
    inputs = check_inputs(inputs, model).to(model_device(model))
    if isinstance(maps, Explanation) and target is None:
        target = maps.target
    maps = as_maps(maps, like=inputs)
    target, logits = resolve_target(model, inputs, target)
    return model, inputs, maps, target, logits


def fill(inputs: torch.Tensor, baseline) -> torch.Tensor:
    """The image removed pixels take: ``"zero"``, ``"blur"``, ``"mean"``, a number, a tensor."""
    return _baseline(inputs, baseline)


def describe(baseline) -> str | float:
    """``baseline`` as a result's parameter (a tensor is ``"custom"``)."""
    return (
        float(baseline)
        if isinstance(baseline, int | float)
        else (baseline if isinstance(baseline, str) else "custom")
    )


def check_int(name: str, value, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def scores(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    total: int,
    build: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    *,
    score: str,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> torch.Tensor:
    """Class scores ``[total]`` of ``total`` perturbed images, one forward each, chunked.

    ``build(j)`` returns the images for item indices ``j`` and the image each comes from;
    it runs on the device inside the chunk, so memory stays one chunk."""
    size = chunk_size(model, inputs, backward=False, batch_size=batch_size, memory=memory)
    run_model = forward_runner(model, inputs)
    device = inputs.device

    def run(a: int, b: int) -> torch.Tensor:
        x, img = build(torch.arange(a, b, device=device))
        return class_score(run_model(x), target[img], score).float()

    return run_chunked(run, total, size, desc=desc)


def cumulative(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    order: torch.Tensor,
    steps: torch.Tensor,
    *,
    start: torch.Tensor,
    finish: torch.Tensor,
    score: str,
    include_start: bool = True,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> torch.Tensor:
    """Scores ``[N, S+1]`` as pixels move from ``start`` to ``finish`` group by group.

    ``order`` ``[N,H*W]`` is each pixel's group (0 moves first); image ``k`` of a curve
    has the pixels of groups ``< k`` from ``finish`` (``k = 0``: ``start`` itself, left
    out with ``include_start=False``: ``[N,S]``); ``steps`` ``[N]`` is each image's number
    of groups ``S_i`` (curves with fewer groups than the most repeat their last score)."""
    n, _c, h, w = inputs.shape
    first = 0 if include_start else 1
    s1 = int(steps.max()) + 1 - first
    stop = steps.to(inputs.device)

    def build(j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = j // s1
        k = torch.minimum(j % s1 + first, stop[img])
        moved = (order[img] < k[:, None]).view(-1, 1, h, w)
        return torch.where(moved, finish[img], start[img]), img

    out = scores(
        model, inputs, target, n * s1, build, score=score, batch_size=batch_size,
        memory=memory, desc=desc,
    )  # fmt: skip
    return out.view(n, s1)


def pixel_groups(maps: torch.Tensor, step: int, *, descending: bool) -> torch.Tensor:
    """Group ``[N,H*W]`` of each pixel: consecutive runs of ``step`` pixels in map order
    (descending or ascending value; ties by pixel index)."""
    flat = maps.flatten(1)
    order = torch.argsort(flat, dim=1, descending=descending, stable=True)
    rank = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    rank.scatter_(1, order, positions)
    return rank // step


def group_sums(maps: torch.Tensor, groups: torch.Tensor, count: int) -> torch.Tensor:
    """Sum ``[N,count]`` of the map over each group (float64)."""
    out = torch.zeros(maps.shape[0], count, dtype=torch.float64, device=maps.device)
    return out.scatter_add_(1, groups, maps.flatten(1).double())


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of ``[N,P]`` ``a`` and ``b`` (NaN where one is
    constant: the correlation is undefined), in float64."""
    a, b = a.double(), b.double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = (a.square().sum(1) * b.square().sum(1)).sqrt()
    out = (a * b).sum(1) / den
    return torch.where(den > 0, out, torch.full_like(out, float("nan"))).clamp(-1, 1)

"""Completeness (Sundararajan et al. 2017, IG's axiom; DeepLIFT's summation-to-delta; LRP's
conservation): ``|sum of attributions - (f_c(x) - f_c(baseline))|`` per image.

``f_c`` is the target logit. The attributions are the explanation's ``raw``
per-channel tensor when there is one, else the maps. Lower is better; 0 for a
method that is complete. ``extras["relative"]`` divides by ``|f_c(x) - f_c(b)|``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attribution.base import resolve_target
from ..errors import InputError
from ..gradmode import with_autograd
from ..hooks import frozen
from ..placement import model_device
from ..types import Explanation
from ._common import as_maps, check_inputs, check_model
from .causal import FILL, _baseline
from .registry import Metric, Scoring, register
from .result import Result

PARAMS = {"baseline": FILL}


@with_autograd
def completeness(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    baseline="zero",
) -> Result:
    """Absolute completeness gap per image (``baseline``: ``"zero"``, a number or a tensor)."""
    model = check_model(model)
    inputs = check_inputs(inputs, model).to(model_device(model))
    if isinstance(maps, Explanation):
        target = maps.target if target is None else target
        attr = maps.raw if maps.raw is not None else maps.maps
        as_maps(maps.maps, like=inputs)
    else:
        attr = as_maps(maps, like=inputs)
    attr = attr.to(inputs.device)
    if attr.shape[0] != inputs.shape[0]:
        raise InputError(f"attributions hold {attr.shape[0]} images, inputs {inputs.shape[0]}")
    with frozen(model):
        target, _ = resolve_target(model, inputs, target)
        base = _baseline(inputs, baseline)
        with torch.no_grad():
            both = model(torch.cat([inputs, base]))
    fx = both[: len(inputs)].gather(1, target[:, None])[:, 0]
    fb = both[len(inputs) :].gather(1, target[:, None])[:, 0]
    delta = fx - fb
    total = attr.flatten(1).sum(1)
    gap = (total - delta).abs().float()
    return Result(
        "completeness",
        gap,
        params={"baseline": baseline if isinstance(baseline, str) else "custom"},
        extras={"sum": total, "delta": delta, "relative": gap / delta.abs().clamp_min(1e-12)},
        higher_is_better=False,
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    return {"values": completeness(s.model, s.x, s.expl, s.target, **settings).values}


register(
    Metric(
        "completeness", "|sum attributions - (f(x) - f(0))| (lower is better)", _score,
        lower_is_better=True, needs=("model", "complete-method"), params=PARAMS, order=90,
        family="axiomatic",
    )
)  # fmt: skip

"""Attribution localisation (Kohlbrenner et al., "Towards best practice in explaining
neural network decisions with LRP", IJCNN 2020, Sec. IV-B).

``mu = R_in / R_tot``: the share of the positive relevance that lies inside the
ground truth (the same number as the energy pointing game,
:func:`cnnlens.metrics.energy_pointing_game`). ``weighted=True`` gives the paper's
``mu_w = mu · S_tot / S_in``, which rewards localisation on small objects (1 = as
concentrated as uniform relevance on the object alone would be; >1 impossible,
<1 relevance spilling out). ``max_area``: images whose ground truth covers more
than that share of the image score NaN (Kohlbrenner et al. keep boxes under 1/3;
the default keeps all). A map without positive values or an empty ground truth
scores NaN. No model is run.
"""

from __future__ import annotations

import torch

from ..params import Param
from ._common import as_maps
from .localisation import _score, energy_pointing_game, object_masks
from .registry import Metric, register
from .result import Result

PARAMS = {
    "weighted": Param("bool", False, help="mu_w = mu * S_tot / S_in"),
    "max_area": Param("float", None, min=0, max=1, open_min=True, none=True),
}


def attribution_localisation(
    model=None,
    inputs=None,
    maps=None,
    target=None,
    *,
    boxes: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    weighted: bool = False,
    max_area: float | None = None,
) -> Result:
    """``R_in / R_tot`` of the positive relevance (``· S_tot / S_in`` when ``weighted``)."""
    maps = as_maps(maps)
    mu = energy_pointing_game(None, None, maps, boxes=boxes, masks=masks).values.double()
    gt = object_masks(maps, boxes=boxes, masks=masks)
    share = gt.flatten(1).double().mean(1)
    nan = torch.full_like(mu, float("nan"))
    values = mu / share.clamp_min(1e-30) if weighted else mu
    values = torch.where(share > 0, values, nan)
    if max_area is not None:
        values = torch.where(share <= max_area, values, nan)
    return Result(
        "attribution_localisation", values.float(),
        params={"weighted": bool(weighted), "max_area": max_area},
    )  # fmt: skip


register(
    Metric(
        "attribution-localisation",
        "share of positive relevance on the object, optionally area-weighted (Kohlbrenner "
        "et al. 2020)",
        _score(attribution_localisation, False), needs=("ground-truth",), params=PARAMS,
        default=False, family="localisation", order=303,
    )
)  # fmt: skip

"""Top-k intersection (Theiner, Müller-Budack and Ewerth, "Interpretable semantic photo
geolocation", WACV 2022, Sec. 5.2).

The share of the map's ``k`` highest pixels that lie inside the ground truth:
``|top_k(R) ∩ GT| / k`` (ties broken by pixel index). ``k`` defaults to Quantus'
1000 pixels of a 224x224 image scaled to the image's area (20 at 32x32).
``concept_influence=True`` divides by the object's share of the image,
``|GT| / HW`` (Theiner et al.'s concept influence: above 1 means the object
draws more than its area's share of the top pixels). An empty ground truth
scores NaN. No model is run.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..params import Param
from ._common import REFERENCE_SIZE, as_maps, descending_rank
from .localisation import _score, object_masks
from .registry import Metric, register
from .result import Result

PARAMS = {
    "k": Param("int", None, min=1, none=True, help="pixels; default 1000 at 224x224, scaled"),
    "concept_influence": Param("bool", False),
}


def default_k(height: int, width: int) -> int:
    """Quantus' 1000 of 224x224 pixels scaled to an ``height x width`` image (at least 1)."""
    return max(1, int(round(1000 * height * width / REFERENCE_SIZE**2)))


def top_k_intersection(
    model=None,
    inputs=None,
    maps=None,
    target=None,
    *,
    boxes: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    k: int | None = None,
    concept_influence: bool = False,
) -> Result:
    """``|top_k(R) ∩ GT| / k`` per image (times ``HW / |GT|`` with ``concept_influence``)."""
    maps = as_maps(maps)
    gt = object_masks(maps, boxes=boxes, masks=masks).flatten(1)
    n_pixels = gt.shape[1]
    k = default_k(*maps.shape[2:]) if k is None else k
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n_pixels:
        raise InputError(f"k must be an integer in [1, {n_pixels}] (pixels of the map), got {k!r}")
    hits = ((descending_rank(maps) < k) & gt).sum(1).double() / k
    area = gt.sum(1)
    if concept_influence:
        hits = hits * n_pixels / area.clamp_min(1)
    values = torch.where(area > 0, hits, torch.full_like(hits, float("nan"))).float()
    return Result(
        "top_k_intersection", values, params={"k": k, "concept_influence": concept_influence}
    )


register(
    Metric(
        "top-k-intersection", "share of the k top pixels on the object (Theiner et al. 2022)",
        _score(top_k_intersection, False), needs=("ground-truth",), params=PARAMS,
        default=False, family="localisation", order=302,
    )
)  # fmt: skip

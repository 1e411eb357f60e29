"""AUC of a map against the ground truth (Fawcett, "An introduction to ROC analysis",
Pattern Recognition Letters 2006, Sec. 7): the area under the ROC curve of the map's
values as scores for "this pixel is on the object".

Computed as the Mann-Whitney statistic (Fawcett Sec. 7: the AUC equals the probability
that a random object pixel scores higher than a random background pixel, ties counting
one half): ``(sum of the object pixels' mid-ranks - P(P+1)/2) / (P Q)`` with ``P``
object and ``Q`` background pixels, which equals the trapezoidal area under the ROC
curve with tied scores joined by a straight segment. 1: every object pixel above every
background pixel; 0.5: chance. An image whose ground truth is empty or covers the whole
image scores NaN. No model is run.
"""

from __future__ import annotations

import torch

from ._common import as_maps
from .localisation import _score, object_masks
from .registry import Metric, register
from .result import Result


def mid_ranks(flat: torch.Tensor) -> torch.Tensor:
    """1-based ranks ``[N,D]`` of each row's values, tied values sharing their mean rank."""
    ordered = flat.sort(1).values.contiguous()
    below = torch.searchsorted(ordered, flat.contiguous(), right=False)
    upto = torch.searchsorted(ordered, flat.contiguous(), right=True)
    return (below + upto + 1).double() / 2


def roc_auc(
    model=None,
    inputs=None,
    maps=None,
    target=None,
    *,
    boxes: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
) -> Result:
    """ROC AUC of the map's values against the object mask, per image."""
    maps = as_maps(maps)
    gt = object_masks(maps, boxes=boxes, masks=masks).flatten(1)
    pos = gt.sum(1).double()
    neg = gt.shape[1] - pos
    ranks = mid_ranks(maps.flatten(1).double())
    u = (ranks * gt).sum(1) - pos * (pos + 1) / 2
    values = u / (pos * neg).clamp_min(1)
    values = torch.where((pos > 0) & (neg > 0), values, torch.full_like(values, float("nan")))
    return Result("auc", values.float())


register(
    Metric(
        "auc", "ROC AUC of the map's values against the object mask (Fawcett 2006)",
        _score(roc_auc, False), needs=("ground-truth",), default=False,
        family="localisation", order=304,
    )
)  # fmt: skip

"""Relevance mass and relevance rank accuracy (Arras, Osman and Samek, "CLEVR-XAI: a
benchmark dataset for the ground truth evaluation of neural network explanations",
Information Fusion 2022, Sec. 4.2).

With ground truth ``GT`` (an object mask or box) of ``K`` pixels and a map ``R``:

- relevance mass accuracy ``= sum_{p in GT} R_p / sum_p R_p``: the share of the map's
  total relevance that lies on the object (signed sums, as Quantus 0.6 computes it;
  the paper evaluates non-negative pooled maps, where it lies in ``[0, 1]``; for
  a map with negative values it can leave that range and for a zero-sum map it is NaN);
- relevance rank accuracy ``= |top_K(R) ∩ GT| / K``: the share of the ``K`` highest
  map pixels inside the object (ties broken by pixel index). It is the bounding-box
  score of IBA (:func:`cnnlens.metrics.bbox_score`) without its area filter.

An image whose ground truth is empty scores NaN. No model is run.
"""

from __future__ import annotations

import torch

from ._common import as_maps
from .localisation import _score, bbox_score, object_masks
from .registry import Metric, register
from .result import Result


def relevance_mass_accuracy(
    model=None,
    inputs=None,
    maps=None,
    target=None,
    *,
    boxes: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
) -> Result:
    """``sum(R · GT) / sum(R)`` per image (NaN for an empty ground truth or a zero-sum map)."""
    maps = as_maps(maps)
    gt = object_masks(maps, boxes=boxes, masks=masks).flatten(1)
    flat = maps.flatten(1).double()
    total = flat.sum(1)
    inside = (flat * gt).sum(1)
    nan = torch.full_like(total, float("nan"))
    values = torch.where(total != 0, inside / torch.where(total != 0, total, 1.0), nan)
    values = torch.where(gt.any(1), values, nan)
    return Result("relevance_mass_accuracy", values.float())


def relevance_rank_accuracy(
    model=None,
    inputs=None,
    maps=None,
    target=None,
    *,
    boxes: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
) -> Result:
    """``|top_K(R) ∩ GT| / K`` per image, ``K = |GT|`` (NaN for an empty ground truth)."""
    r = bbox_score(None, None, maps, boxes=boxes, masks=masks)
    return Result("relevance_rank_accuracy", r.values, extras=r.extras)


for _name, _f, _text, _order in (
    ("relevance-mass-accuracy", relevance_mass_accuracy,
     "share of the map's total relevance on the object (Arras et al. 2022)", 300),
    ("relevance-rank-accuracy", relevance_rank_accuracy,
     "share of the K top pixels on the K-pixel object (Arras et al. 2022)", 301),
):  # fmt: skip
    register(
        Metric(
            _name, _text, _score(_f, False), needs=("ground-truth",), default=False,
            family="localisation",
            order=_order,
        )
    )  # fmt: skip

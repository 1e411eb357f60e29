"""Sufficiency (Dasgupta, Frost and Moshkovitz, "Framework for Evaluating Faithfulness of
Local Explanations", ICML 2022, Sec. 2, local sufficiency).

An explanation is sufficient when the points it also applies to get the same prediction:
the local sufficiency of image ``i`` is ``P[f(x_j) = f(x_i) | e_i applies to x_j]``. As in
Quantus, ``e_i`` applies to ``x_j`` when the distance between the two maps (absolute values,
standardised Euclidean: each pixel divided by its variance over the images, or Euclidean),
divided by the largest distance of the set, is at most ``threshold``; the probability is
the share of those other images predicted as image ``i``. Higher is better.

By definition the score of an image depends on the other images of the set (its
neighbours in explanation space): the set is the images of the call (in ``evaluate``, of
the chunk). It is invariant to their order. An image no other map applies to gets NaN
(no evidence either way; Quantus gives 0). Pixels with zero variance over the set do not
separate any two maps and are left out of the standardised distance (SciPy divides by
zero). One forward per image (the predictions).
"""

from __future__ import annotations

import torch
from torch import nn

from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import Param, check_params
from . import _faithfulness as F
from .registry import Metric, Scoring, register
from .result import Result

PARAMS = {
    "threshold": Param("float", 0.6, min=0, max=1, help="largest normalised map distance"),
    "distance": Param("str", "seuclidean", choices=("seuclidean", "euclidean")),
    "absolute": Param("bool", True, help="compare |maps|"),
}


def map_distances(maps: torch.Tensor, distance: str = "seuclidean") -> torch.Tensor:
    """Pairwise distances ``[N,N]`` (float64) of the flattened maps."""
    flat = maps.flatten(1).double()
    if distance == "seuclidean":
        var = flat.var(0, unbiased=True) if flat.shape[0] > 1 else torch.zeros_like(flat[0])
        keep = var > 0
        flat = flat[:, keep] / var[keep].sqrt()
    diff = flat[:, None, :] - flat[None, :, :]
    return diff.square().sum(-1).sqrt()


@with_autograd
def sufficiency(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    threshold: float = 0.6,
    distance: str = "seuclidean",
    absolute: bool = True,
) -> Result:
    """Share of the images whose maps lie within ``threshold`` (of the largest distance)
    of image ``i``'s map that the model predicts as image ``i`` (NaN: none lies there).

    ``extras``: ``neighbours`` ``[N]`` (how many maps apply), ``predicted`` ``[N]``.
    ``target`` is not used (the metric compares predictions), accepted for the registry."""
    settings = dict(threshold=threshold, distance=distance, absolute=absolute)
    check_params("sufficiency", settings, PARAMS)
    with frozen(model):
        model, inputs, maps, _target, logits = F.prepare(model, inputs, maps, target)
    predicted = logits.argmax(1)
    d = map_distances(maps.abs() if absolute else maps, distance)
    top = d.max()
    d = d / top if top > 0 else d
    near = (d <= threshold) & ~torch.eye(d.shape[0], dtype=torch.bool, device=d.device)
    same = predicted[:, None] == predicted[None, :]
    count = near.sum(1)
    values = (near & same).sum(1).double() / count.double()  # 0/0: NaN, no neighbour
    return Result(
        metric="sufficiency",
        values=values.float(),
        params=settings,
        extras={"neighbours": count, "predicted": predicted},
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    r = sufficiency(s.model, s.x, s.maps, s.target, **settings)
    return {"values": r.values}


register(
    Metric(
        "sufficiency",
        "share of images with a nearby map that get the same prediction (Dasgupta et al. 2022)",
        _score, params=PARAMS, default=False, order=211,
    )
)  # fmt: skip

"""Random logit test (Sixt, Granz and Landgraf, "When Explanations Lie: Why Many Modified
BP Attributions Fail", ICML 2020, Sec. 5.2).

A class-sensitive explanation changes when it explains another class: the map for the
target is compared with the map the same method gives for a random other class of the
same image. ``values`` is their similarity (SSIM of the two maps, each scaled to [0, 1],
as in the paper's figures; or Spearman rank correlation): lower is better.

The other class comes from ``seed`` alone: one uniform draw ``u``, the same for every
image (:class:`cnnlens.seeding.Draws`), picks the ``floor(u (K-1))``-th of the K-1
classes other than the image's target, so an image's score does not depend on the other
images of the call. One extra explanation per image (the method's own passes).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import Param, check_params
from ..placement import model_device
from ..seeding import Draws
from ._axioms import explainer
from ._common import as_maps, check_inputs, check_model, checked_targets
from .registry import Metric, Scoring, register
from .result import Result
from .similarity import spearman, ssim

PARAMS = {
    "similarity": Param("str", "ssim", choices=("ssim", "spearman")),
    "absolute": Param("bool", False, help="compare |maps|"),
    "seed": Param("int", 0),
}


def other_class(seed: int, target: torch.Tensor, classes: int) -> torch.Tensor:
    """A class ``!= target`` per image, the same rank among the others for every image."""
    if classes < 2:
        raise InputError("random-logit needs a model with at least 2 classes")
    u = float(Draws(seed, 1, (1,), kind="uniform").one(0))
    k = min(int(u * (classes - 1)), classes - 2)
    return k + (k >= target).long()


@with_autograd
def random_logit(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    method=None,
    method_params: dict | None = None,
    similarity: str = "ssim",
    absolute: bool = False,
    seed: int = 0,
) -> Result:
    """Similarity of each map with the map ``method`` gives for a random other class.

    ``method``: a registered name or ``f(model, x, target) -> maps``; with an
    :class:`~cnnlens.types.Explanation` its method, settings and targets by default.
    ``extras``: ``other`` ``[N]`` (the class explained the second time), ``target``."""
    settings = dict(similarity=similarity, absolute=absolute, seed=seed)
    check_params("random_logit", settings, PARAMS)
    model = check_model(model)
    inputs = check_inputs(inputs, model).to(model_device(model))
    again, described = explainer("random-logit", maps, method, method_params)
    if target is None and hasattr(maps, "target"):
        target = maps.target
    original = as_maps(maps, like=inputs)
    with frozen(model):
        target, _logits, classes = checked_targets(model, inputs, target, need_logits=False)
    other = other_class(seed, target, classes)
    new = again(model, inputs, other)
    a, b = (original.abs(), new.abs()) if absolute else (original, new)
    values = ssim(a, b) if similarity == "ssim" else spearman(a, b)
    return Result(
        metric="random-logit",
        values=values,
        params={**settings, **described},
        extras={"other": other, "target": target},
        higher_is_better=False,
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    settings.setdefault("seed", s.seed)
    r = random_logit(s.model, s.x, s.maps, s.target, method=s.fn, **settings)
    return {"values": r.values}


register(
    Metric(
        "random-logit",
        "similarity of the maps for the target and a random other class (Sixt et al. 2020)",
        _score, lower_is_better=True, needs=("model", "method"), params=PARAMS, default=False,
        family="randomisation",
        order=212,
    )
)  # fmt: skip

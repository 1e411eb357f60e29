"""Complexity of a map: sparseness, complexity and effective complexity. No model is run;
the maps' absolute values are scored (as in the papers and Quantus 0.6's defaults).

- Sparseness (Chalasani et al., "Concise explanations of neural networks using
  adversarial training", ICML 2020, Sec. 6): the Gini index of ``|R|`` sorted
  ascending, ``sum_i (2i - d - 1) |R|_(i) / (d sum_i |R|_i)`` over ``d`` pixels.
  0 for a constant map (and for an all-zero map), ``(d-1)/d`` for a one-hot map.
  Higher is sparser.
- Complexity (Bhatt, Weller and Moura, "Evaluating and aggregating feature-based
  model explanations", IJCAI 2020, Sec. 4.3): the entropy of the fractional
  contributions ``P_i = |R_i| / sum_j |R_j|``, ``-sum_i P_i ln P_i`` (``0 ln 0 = 0``).
  0 for a one-hot map, ``ln d`` for a constant one; NaN for an all-zero map. Lower
  is simpler.
- Effective complexity (Nguyen and Martínez, "On quantitative aspects of model
  interpretability", 2020, Sec. 4.2): the number of pixels whose attribution
  magnitude exceeds ``eps`` after dividing by the map's largest magnitude (Quantus'
  ``normalise_by_max``): ``|{i : |R_i| / max_j |R_j| > eps}|``; 0 for an all-zero
  map. Lower is simpler.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..params import Param
from ._common import as_maps
from .registry import Metric, Scoring, register
from .result import Result

EFFECTIVE_PARAMS = {
    "eps": Param("float", 1e-5, min=0, max=1, open_max=True, help="of the map's largest magnitude")
}


def _magnitudes(maps) -> torch.Tensor:
    return as_maps(maps).flatten(1).double().abs()


def sparseness(model=None, inputs=None, maps=None, target=None) -> Result:
    """The Gini index of ``|R|`` per image (Chalasani et al. 2020)."""
    a = _magnitudes(maps).sort(1).values
    d = a.shape[1]
    i = torch.arange(1, d + 1, dtype=a.dtype, device=a.device)
    total = a.sum(1)
    gini = ((2 * i - d - 1) * a).sum(1) / (d * total.clamp_min(1e-300))
    return Result("sparseness", torch.where(total > 0, gini, 0.0).float())


def complexity(model=None, inputs=None, maps=None, target=None) -> Result:
    """The entropy of ``|R| / sum |R|`` per image (Bhatt et al. 2020), in nats."""
    a = _magnitudes(maps)
    total = a.sum(1, keepdim=True)
    p = a / total.clamp_min(1e-300)
    entropy = -torch.special.xlogy(p, p).sum(1)
    values = torch.where(total[:, 0] > 0, entropy, float("nan"))
    return Result("complexity", values.float(), higher_is_better=False)


def effective_complexity(
    model=None, inputs=None, maps=None, target=None, *, eps: float = 1e-5
) -> Result:
    """The number of pixels with ``|R| / max |R| > eps`` per image (Nguyen and Martínez 2020)."""
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 <= eps < 1:
        raise InputError(f"eps must be a number in [0, 1) (of the map's maximum), got {eps!r}")
    a = _magnitudes(maps)
    peak = a.amax(1, keepdim=True)
    count = (a / torch.where(peak > 0, peak, 1.0) > eps).sum(1)
    return Result(
        "effective_complexity", count.float(), params={"eps": eps}, higher_is_better=False
    )


def _score(f):
    def score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
        return {"values": f(None, None, s.maps, **settings).values}

    return score


for _name, _f, _text, _lower, _params, _order in (
    ("sparseness", sparseness, "Gini index of |map| (Chalasani et al. 2020; higher is sparser)",
     False, {}, 320),
    ("complexity", complexity,
     "entropy of |map| / sum |map| (Bhatt et al. 2020; lower is simpler)", True, {}, 321),
    ("effective-complexity", effective_complexity,
     "pixels with |map| above eps of its maximum (Nguyen & Martinez 2020; lower is simpler)",
     True, EFFECTIVE_PARAMS, 322),
):  # fmt: skip
    register(
        Metric(
            _name, _text, _score(_f), lower_is_better=_lower, needs=(), params=_params,
            default=False, family="complexity", order=_order,
        )
    )  # fmt: skip

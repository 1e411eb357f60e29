"""Sensitivity-n (Ancona, Ceolini, Öztireli and Gross, "Towards better understanding of
gradient-based attribution methods for deep neural networks", ICLR 2018, Sec. 4, Fig. 3).

A map has sensitivity-n when, for every subset ``S`` of ``n`` features, its sum over ``S``
equals the drop of the output when ``S`` is removed: ``sum_{i in S} R_i = S_c(x) -
S_c(x_[x_S = 0])``. The paper measures it, for several ``n``, as the Pearson correlation
between the map sums and the output drops over random subsets of ``n`` pixels. Per image:
one correlation per size (``curves``, abscissa ``x`` = ``n`` as a share of the pixels);
``values`` is their mean over the sizes (higher is better).

Subsets are drawn from ``seed`` alone (:class:`cnnlens.seeding.Draws`, the same for every
image), all sizes in one batched call of faithfulness correlation's core (one forward per
(image, subset), chunked). Default sizes: 8 log-spaced sizes from 1 pixel to 80 % of the
pixels (Quantus' ``n_max_percentage``). Quantus' ``SensitivityN`` measures another thing
(tests/test_metrics_quantus_axioms.py says what).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError
from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import Param, check_params
from ..seeding import Draws
from . import _faithfulness as F
from ._common import class_score
from .faithfulness_correlation import correlation_of_subsets
from .registry import Metric, Scoring, register
from .result import Result


def _check_sizes(sizes) -> None:
    if not isinstance(sizes, list | tuple) or not sizes:
        raise InputError(f"sizes must be a non-empty list of pixel counts, got {sizes!r}")
    for n in sizes:
        F.check_int("each of sizes", n)


PARAMS = {
    "sizes": Param("any", None, none=True, validate=_check_sizes,
                   help="subset sizes n in pixels; none: 8 log-spaced up to 80 %"),
    "runs": Param("int", 50, min=3, help="random subsets per size"),
    "baseline": F.FILL,
    "score": F.SCORE,
    "seed": Param("int", 0),
}  # fmt: skip


def default_sizes(pixels: int, count: int = 8, top: float = 0.8) -> list[int]:
    """``count`` log-spaced sizes from 1 to ``top`` of ``pixels`` (duplicates dropped)."""
    hi = max(1, int(top * pixels))
    return sorted({round(math.exp(math.log(hi) * k / (count - 1))) for k in range(count)})


def subsets_of_sizes(seed: int, runs: int, pixels: int, sizes: list[int], device) -> torch.Tensor:
    """``[len(sizes) * runs, pixels]`` bool: rows ``k*runs ... (k+1)*runs - 1`` hold
    ``sizes[k]`` pixels each, the lowest of one seeded uniform draw per row."""
    count = len(sizes) * runs
    u = Draws(seed, count, (pixels,), device=device, kind="uniform")(
        torch.arange(count, device=device)
    )
    rank = u.argsort(1).argsort(1)
    size = torch.tensor(sizes, device=device).repeat_interleave(runs)
    return rank < size[:, None]


@with_autograd
def sensitivity_n(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    sizes: list[int] | tuple[int, ...] | None = None,
    runs: int = 50,
    baseline=0.0,
    score: str = "probability",
    seed: int = 0,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> Result:
    """Pearson correlation of map sums and score drops over ``runs`` random subsets of each
    size in ``sizes`` (pixels); ``values`` their mean over sizes, ``curves`` ``[N, sizes]``.

    Removed pixels take ``baseline``; NaN where a correlation is undefined (constant sums
    or drops). ``extras``: ``sums`` and ``drops`` ``[N, sizes, runs]``, ``target``.
    """
    settings = dict(sizes=sizes, runs=runs, baseline=baseline, score=score, seed=seed)
    check_params("sensitivity_n", settings, PARAMS)
    with frozen(model):
        model, inputs, maps, target, logits = F.prepare(model, inputs, maps, target)
        n, _c, h, w = inputs.shape
        sizes = default_sizes(h * w) if sizes is None else [int(s) for s in sizes]
        if max(sizes) > h * w:
            raise InputError(f"sizes go up to {max(sizes)} pixels; the images have {h * w}")
        chosen = subsets_of_sizes(seed, runs, h * w, sizes, inputs.device)
        f_x = class_score(logits, target, score)
        _, sums, drops = correlation_of_subsets(
            model, inputs, maps, target, f_x, chosen, baseline=baseline, score=score,
            batch_size=batch_size, memory=memory, desc=desc,
        )  # fmt: skip
        sums = sums.view(n, len(sizes), runs)
        drops = drops.view(n, len(sizes), runs)
        curves = F.pearson(sums.flatten(0, 1), drops.flatten(0, 1)).view(n, len(sizes))
    return Result(
        metric="sensitivity-n",
        values=curves.nanmean(1).float(),
        curves=curves.float(),
        x=torch.tensor(sizes, dtype=torch.float32) / (h * w),
        params={**settings, "sizes": sizes, "baseline": F.describe(baseline)},
        extras={"sums": sums.float(), "drops": drops.float(), "target": target},
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    settings.setdefault("seed", s.seed)
    r = sensitivity_n(
        s.model, s.x, s.maps, s.target, batch_size=s.batch_size, memory=s.memory, **settings
    )
    return {"values": r.values, "curve": r.curves, "x": r.x}


register(
    Metric(
        "sensitivity-n",
        "mean over subset sizes n of corr. of map sums and score drops (Ancona et al. 2018)",
        _score, kind="curve", params=PARAMS, default=False, order=210,
        curves={"": ("sensitivity-n", "subset size n (share of pixels)")},
    )
)  # fmt: skip

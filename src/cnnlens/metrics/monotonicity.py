"""Monotonicity, two metrics of that name.

``monotonicity-arya`` (Arya et al., "One Explanation Does Not Fit All", 2019, AIX360's
``monotonicity_metric``): start from the baseline image and put the image's pixels back
group by group in *increasing* attribution order; the explanation is monotonic (1) when
the class score never decreases from one step to the next, else 0.

``monotonicity-nguyen`` (Nguyen and Martinez, "On quantitative aspects of model
interpretability", 2020, Sec. 3.2): the Spearman correlation between each pixel
group's attribution and the expected squared change of the class score when that group
alone takes random values, ``E[(f(x) - f(x_{group <- u}))^2]`` over ``samples`` draws.
Quantus also divides by ``f(x)^2``: one constant per image, which a rank correlation
ignores, so it is left out. Random values: draw ``j`` is ``U[0,1)`` per input element
(from ``seed`` alone, the same for every image) scaled to the image's value range; a
fixed ``baseline`` (a number, ``"zero"``, ``"mean"``, ``"blur"``) gives the
deterministic variant (one sample is enough).

Both order groups of ``step`` pixels by ``|map|`` (``absolute=True``, Quantus'
default) or by the signed map; both are higher-is-better and chunked, one forward
per perturbed image.
"""

from __future__ import annotations

import torch
from torch import nn

from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import Param, check_params
from ..seeding import Draws
from . import _faithfulness as F
from ._common import class_score
from .causal import default_step
from .registry import Metric, Scoring, register
from .result import Result
from .similarity import spearman

ABSOLUTE = Param("bool", True, help="order by |map|")
ARYA = {"step": F.STEP, "baseline": F.FILL, "absolute": ABSOLUTE, "score": F.SCORE}
NGUYEN = {
    "step": F.STEP,
    "samples": Param("int", 10, min=1, help="random fills per group"),
    "baseline": Param(
        "float|tensor", "uniform", choices=("uniform", "zero", "blur", "mean"),
        help="uniform: random values in the image's range",
    ),
    "absolute": ABSOLUTE,
    "score": F.SCORE,
    "seed": Param("int", 0),
}  # fmt: skip


def _ordered(maps: torch.Tensor, step: int | None, absolute: bool) -> tuple[torch.Tensor, int]:
    h, w = maps.shape[2:]
    step = default_step(h, w) if step is None else min(step, h * w)
    return (maps.abs() if absolute else maps), step


@with_autograd
def monotonicity_arya(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    step: int | None = None,
    baseline=0.0,
    absolute: bool = True,
    score: str = "probability",
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> Result:
    """1 where the class score never falls as pixel groups return in increasing
    attribution order (from the ``baseline`` image), else 0.

    ``curves`` ``[N,G]``: the score after each group returns (the baseline image itself
    is not scored, as in AIX360 and Quantus); ``step`` pixels per group (default 0.9 %).
    """
    settings = dict(step=step, baseline=baseline, absolute=absolute, score=score)
    check_params("monotonicity_arya", settings, ARYA)
    with frozen(model):
        model, inputs, maps, target, _ = F.prepare(model, inputs, maps, target)
        n, _c, h, w = inputs.shape
        ranked, step = _ordered(maps, step, absolute)
        count = -(-(h * w) // step)
        curves = F.cumulative(
            model, inputs, target, F.pixel_groups(ranked, step, descending=False),
            torch.full((n,), count), start=F.fill(inputs, baseline), finish=inputs,
            score=score, include_start=False, batch_size=batch_size, memory=memory, desc=desc,
        )  # fmt: skip
    values = (curves.diff(dim=1) >= 0).all(1).float()
    return Result(
        metric="monotonicity-arya",
        values=values,
        curves=curves,
        x=torch.arange(1, count + 1, dtype=torch.float32) / count,
        params={**settings, "step": step, "baseline": F.describe(baseline)},
        extras={"target": target},
    )


@with_autograd
def monotonicity_nguyen(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    step: int | None = None,
    samples: int = 10,
    baseline="uniform",
    absolute: bool = True,
    score: str = "probability",
    seed: int = 0,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> Result:
    """Spearman correlation of pixel-group attributions and the mean squared score change
    when each group alone is refilled (``samples`` random fills, or ``baseline``).

    NaN where either is constant. ``extras``: ``sums`` (group attributions) and
    ``changes`` ``[N,G]`` (groups in increasing attribution order), ``target``.
    """
    settings = dict(
        step=step, samples=samples, baseline=baseline, absolute=absolute, score=score, seed=seed
    )
    check_params("monotonicity_nguyen", settings, NGUYEN)
    with frozen(model):
        model, inputs, maps, target, logits = F.prepare(model, inputs, maps, target)
        n, c, h, w = inputs.shape
        ranked, step = _ordered(maps, step, absolute)
        count = -(-(h * w) // step)
        groups = F.pixel_groups(ranked, step, descending=False)
        if isinstance(baseline, str) and baseline == "uniform":
            flat = inputs.flatten(1)
            lo = flat.amin(1).view(-1, 1, 1, 1)
            span = flat.amax(1).view(-1, 1, 1, 1) - lo
            draws = Draws(seed, samples, (c, h, w), device=inputs.device, kind="uniform")

            def refill(img: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
                return lo[img] + draws(s).to(inputs.dtype) * span[img]
        else:
            fixed = F.fill(inputs, baseline)

            def refill(img: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
                return fixed[img]

        per_image = count * samples

        def build(j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            img, g = j // per_image, (j // samples) % count
            mask = (groups[img] == g[:, None]).view(-1, 1, h, w)
            return torch.where(mask, refill(img, j % samples), inputs[img]), img

        f_p = F.scores(
            model, inputs, target, n * per_image, build, score=score, batch_size=batch_size,
            memory=memory, desc=desc,
        )  # fmt: skip
        f_x = class_score(logits, target, score).double()
    changes = (f_p.view(n, count, samples).double() - f_x[:, None, None]).square().mean(2)
    sums = F.group_sums(ranked, groups, count)
    return Result(
        metric="monotonicity-nguyen",
        values=spearman(sums, changes).float(),
        params={**settings, "step": step, "baseline": F.describe(baseline)},
        extras={"sums": sums.float(), "changes": changes.float(), "target": target},
    )


def _arya(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    r = monotonicity_arya(
        s.model, s.x, s.maps, s.target, batch_size=s.batch_size, memory=s.memory, **settings
    )
    return {"values": r.values}


def _nguyen(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    settings.setdefault("seed", s.seed)
    r = monotonicity_nguyen(
        s.model, s.x, s.maps, s.target, batch_size=s.batch_size, memory=s.memory, **settings
    )
    return {"values": r.values}


register(
    Metric(
        "monotonicity-arya",
        "share of images whose score never falls as pixels return by rising attribution",
        _arya, params=ARYA, default=False, order=202,
        family="faithfulness",
    )
)  # fmt: skip
register(
    Metric(
        "monotonicity-nguyen",
        "Spearman corr. of group attributions and the score change their refill causes",
        _nguyen, params=NGUYEN, default=False, order=203,
        family="faithfulness",
    )
)  # fmt: skip

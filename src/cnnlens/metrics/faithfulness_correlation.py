"""Faithfulness correlation (Bhatt, Weller and Moura, "Evaluating and Aggregating
Feature-based Model Explanations", IJCAI 2020, Sec. 3.2, eq. 2).

``mu_F = corr_S ( sum_{i in S} g(f, x)_i , f(x) - f(x_[x_S = x_bar]) )``:
over ``runs`` random subsets ``S`` of ``subset`` pixels, the Pearson correlation between
the map's sum over ``S`` and the drop of the class score when ``S`` takes the baseline
value. Higher is better (1: the map predicts every drop up to scale).

Subset ``r`` is the same for every image (drawn from ``seed`` alone with
:class:`cnnlens.seeding.Draws`), so an image's score does not depend on the other images
of the call; one forward per (image, subset), chunked. Default subset: Quantus' 224
features of a 224 x 224 image, the same share (0.45 %) of other sizes.
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
from .registry import Metric, Scoring, register
from .result import Result

PARAMS = {
    "runs": Param("int", 100, min=2, help="random subsets per image"),
    "subset": Param("int", None, min=1, none=True, help="pixels per subset; none: 0.45 %"),
    "baseline": F.FILL,
    "score": F.SCORE,
    "seed": Param("int", 0),
}


def random_subsets(seed: int, runs: int, pixels: int, subset: int, device) -> torch.Tensor:
    """``[runs, pixels]`` bool: ``subset`` pixels drawn without replacement per run."""
    u = Draws(seed, runs, (pixels,), device=device, kind="uniform")(
        torch.arange(runs, device=device)
    )
    chosen = torch.zeros(runs, pixels, dtype=torch.bool, device=device)
    return chosen.scatter_(1, u.topk(subset, dim=1).indices, True)


def correlation_of_subsets(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    f_x: torch.Tensor,
    chosen: torch.Tensor,
    *,
    baseline,
    score: str,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Correlation ``[N]``, map sums ``[N,R]`` and drops ``[N,R]`` for subsets ``chosen``
    (``[R,HW]`` shared by the images or ``[N,R,HW]`` per image)."""
    n, _c, h, w = inputs.shape
    chosen = chosen.expand(n, *chosen.shape[-2:])
    runs = chosen.shape[1]
    removed = F.fill(inputs, baseline)

    def build(j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = j // runs
        mask = chosen[img, j % runs].view(-1, 1, h, w)
        return torch.where(mask, removed[img], inputs[img]), img

    f_s = F.scores(
        model, inputs, target, n * runs, build, score=score, batch_size=batch_size,
        memory=memory, desc=desc,
    )  # fmt: skip
    drops = f_x.double()[:, None] - f_s.view(n, runs).double()
    sums = (chosen.double() @ maps.flatten(1).double()[:, :, None])[..., 0]
    return F.pearson(sums, drops), sums, drops


@with_autograd
def faithfulness_correlation(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    runs: int = 100,
    subset: int | None = None,
    baseline=0.0,
    score: str = "probability",
    seed: int = 0,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> Result:
    """Pearson correlation of map sums and score drops over ``runs`` random pixel subsets.

    ``subset`` pixels per subset (default 0.45 % of the image), removed pixels take
    ``baseline`` (a number, ``"zero"``, ``"mean"``, ``"blur"`` or a tensor), ``score``
    ``"probability"`` or ``"logit"``. NaN where the map sums or the drops are constant.
    ``extras``: ``sums`` and ``drops`` ``[N,runs]``, ``target``.
    """
    settings = dict(runs=runs, subset=subset, baseline=baseline, score=score, seed=seed)
    check_params("faithfulness_correlation", settings, PARAMS)
    with frozen(model):
        model, inputs, maps, target, logits = F.prepare(model, inputs, maps, target)
        h, w = inputs.shape[2:]
        subset = max(1, round(h * w / 224)) if subset is None else subset
        subset = min(int(subset), h * w)
        chosen = random_subsets(seed, runs, h * w, subset, inputs.device)
        f_x = class_score(logits, target, score)
        values, sums, drops = correlation_of_subsets(
            model, inputs, maps, target, f_x, chosen, baseline=baseline, score=score,
            batch_size=batch_size, memory=memory, desc=desc,
        )  # fmt: skip
    return Result(
        metric="faithfulness-correlation",
        values=values.float(),
        params={**settings, "subset": subset, "baseline": F.describe(baseline)},
        extras={"sums": sums.float(), "drops": drops.float(), "target": target},
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    settings.setdefault("seed", s.seed)
    r = faithfulness_correlation(
        s.model, s.x, s.maps, s.target, batch_size=s.batch_size, memory=s.memory, **settings
    )
    return {"values": r.values}


register(
    Metric(
        "faithfulness-correlation",
        "Pearson corr. of map sums and score drops over random pixel subsets (Bhatt 2020)",
        _score, params=PARAMS, default=False, order=200,
        family="faithfulness",
    )
)  # fmt: skip

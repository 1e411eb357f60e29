"""Faithfulness estimate (Alvarez-Melis and Jaakkola, "Towards Robust Interpretability
with Self-Explaining Neural Networks", NeurIPS 2018, Sec. 3, "faithfulness").

Each group of ``step`` pixels (consecutive in descending map order) is removed on its
own (set to the baseline) and the class-score drop ``f(x) - f(x_{-group})`` recorded;
the value is the Pearson correlation between the groups' map sums and their drops.
Higher is better. With ``step = 1`` it is the paper's (and Quantus') per-feature
estimate; the default takes deletion's 0.9 % of the pixels per group (448 of 224 x 224)
so an image costs ``ceil(HW / step)`` forwards (about 112) rather than ``HW``.

Deterministic; one forward per (image, group), chunked.
"""

from __future__ import annotations

import torch
from torch import nn

from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import check_params
from . import _faithfulness as F
from ._common import class_score
from .causal import default_step
from .registry import Metric, Scoring, register
from .result import Result

PARAMS = {"step": F.STEP, "baseline": F.FILL, "score": F.SCORE}


@with_autograd
def faithfulness_estimate(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    step: int | None = None,
    baseline=0.0,
    score: str = "probability",
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> Result:
    """Pearson correlation of each pixel group's map sum and the score drop when the
    group alone is removed (``baseline`` fill, ``score`` probability or logit).

    NaN where the sums or the drops are constant. ``extras``: ``sums``, ``drops``
    ``[N,G]`` (groups in descending map order), ``target``.
    """
    settings = dict(step=step, baseline=baseline, score=score)
    check_params("faithfulness_estimate", settings, PARAMS)
    with frozen(model):
        model, inputs, maps, target, logits = F.prepare(model, inputs, maps, target)
        n, _c, h, w = inputs.shape
        step = default_step(h, w) if step is None else min(step, h * w)
        count = -(-(h * w) // step)
        groups = F.pixel_groups(maps, step, descending=True)
        removed = F.fill(inputs, baseline)

        def build(j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            img = j // count
            mask = (groups[img] == (j % count)[:, None]).view(-1, 1, h, w)
            return torch.where(mask, removed[img], inputs[img]), img

        f_g = F.scores(
            model, inputs, target, n * count, build, score=score, batch_size=batch_size,
            memory=memory, desc=desc,
        )  # fmt: skip
        drops = class_score(logits, target, score).double()[:, None] - f_g.view(n, count).double()
    sums = F.group_sums(maps, groups, count)
    return Result(
        metric="faithfulness-estimate",
        values=F.pearson(sums, drops).float(),
        params={**settings, "step": step, "baseline": F.describe(baseline)},
        extras={"sums": sums.float(), "drops": drops.float(), "target": target},
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    r = faithfulness_estimate(
        s.model, s.x, s.maps, s.target, batch_size=s.batch_size, memory=s.memory, **settings
    )
    return {"values": r.values}


register(
    Metric(
        "faithfulness-estimate",
        "Pearson corr. of pixel-group map sums and the drop each group's removal causes",
        _score, params=PARAMS, default=False, order=201,
        family="faithfulness",
    )
)  # fmt: skip

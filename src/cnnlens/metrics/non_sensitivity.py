"""Non-sensitivity (Nguyen and Martínez, "On quantitative aspects of model
interpretability", 2020, Sec. 3.2).

Features the model does not use should get no attribution, and features with no
attribution should not move the model: non-sensitivity is the size of the symmetric
difference between the set of features whose attribution is (near) zero, ``|a_i| <
eps max|a|``, and the set of features whose removal (set to ``baseline``, one feature at
a time from the image) changes the class score by less than ``eps``. Lower is better
(0: the two sets coincide).

Features are groups of ``step`` pixels in row-major order (``step`` 1: single pixels, the
paper's and Quantus' default; all channels of a pixel move together); a group counts as
without attribution when each of its pixels is. Maps are scaled by each image's own
largest ``|a|`` (Quantus divides by the largest of the whole batch). One forward per
(image, group), chunked. ``extras["share"]``: the count over the number of groups.
"""

from __future__ import annotations

import torch
from torch import nn

from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import Param, check_params
from . import _faithfulness as F
from ._common import class_score
from .registry import Metric, Scoring, register
from .result import Result

PARAMS = {
    "eps": Param("float", 1e-5, min=0, help="what counts as no attribution and no change"),
    "step": Param("int", 1, min=1, help="pixels per feature (row-major runs)"),
    "baseline": F.FILL,
    "score": F.SCORE,
}


@with_autograd
def non_sensitivity(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    eps: float = 1e-5,
    step: int = 1,
    baseline=0.0,
    score: str = "probability",
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> Result:
    """Number of features where "no attribution" and "no effect when removed" disagree.

    ``extras``: ``share`` (the count over the number of features), ``no_attribution`` and
    ``no_effect`` ``[N, features]`` (bool), ``target``."""
    settings = dict(eps=eps, step=step, baseline=baseline, score=score)
    check_params("non_sensitivity", settings, PARAMS)
    with frozen(model):
        model, inputs, maps, target, logits = F.prepare(model, inputs, maps, target)
        n, _c, h, w = inputs.shape
        group = torch.arange(h * w, device=inputs.device) // step
        count = int(group[-1]) + 1
        removed = F.fill(inputs, baseline)

        def build(j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            img = j // count
            mask = (group[None, :] == (j % count)[:, None]).view(-1, 1, h, w)
            return torch.where(mask, removed[img], inputs[img]), img

        f_s = F.scores(
            model, inputs, target, n * count, build, score=score, batch_size=batch_size,
            memory=memory, desc=desc,
        ).view(n, count)  # fmt: skip
        f_x = class_score(logits, target, score).float()
    no_effect = (f_s - f_x[:, None]).abs() < eps
    flat = maps.abs().flatten(1)
    top = flat.amax(1, keepdim=True)
    small = flat < eps * torch.where(top > 0, top, torch.ones_like(top))
    no_attribution = torch.zeros(n, count, dtype=torch.long, device=maps.device)
    no_attribution.index_add_(1, group, (~small).long())
    no_attribution = no_attribution == 0
    values = (no_effect ^ no_attribution).sum(1)
    return Result(
        metric="non-sensitivity",
        values=values.float(),
        params={**settings, "baseline": F.describe(baseline)},
        extras={
            "share": values.float() / count,
            "no_attribution": no_attribution,
            "no_effect": no_effect,
            "target": target,
        },
        higher_is_better=False,
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    r = non_sensitivity(
        s.model, s.x, s.maps, s.target, batch_size=s.batch_size, memory=s.memory, **settings
    )
    return {"values": r.values}


register(
    Metric(
        "non-sensitivity",
        "features where zero attribution and no effect on the score disagree (Nguyen and "
        "Martinez 2020; lower is better)",
        _score, lower_is_better=True, params=PARAMS, default=False, family="axiomatic", order=213,
    )
)  # fmt: skip

"""Selectivity (Montavon, Samek and Müller, "Methods for interpreting and understanding
deep neural networks", Digital Signal Processing 2018, Sec. 4.1, Fig. 5).

Square patches of ``patch`` pixels a side are removed (set to the baseline) one after
another in decreasing order of their summed relevance and the class score recorded
after each; a selective explanation makes the score fall fast. The value is the area
under the curve, start included, on ``[0, 1]`` (RISE's trapezoid, as deletion): lower
is better. Sides that ``patch`` does not divide get a patch grid centred as Quantus
pads it (``floor`` of the shortfall before, the rest after), so the border patches
are smaller. ``patch`` 8 is Quantus' default.

One forward per (image, patch), chunked.
"""

from __future__ import annotations

import torch
from torch import nn

from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import Param, check_params
from . import _faithfulness as F
from ._common import auc
from .registry import Metric, Scoring, register
from .result import Result

PARAMS = {
    "patch": Param("int", 8, min=1, help="patch side in pixels"),
    "baseline": F.FILL,
    "score": F.SCORE,
}


def patch_ids(h: int, w: int, patch: int, device) -> tuple[torch.Tensor, int]:
    """Patch index ``[H*W]`` of each pixel (row-major grid centred on the image) and the
    number of patches."""

    def axis(size: int) -> tuple[torch.Tensor, int]:
        cells = -(-size // patch)
        offset = (cells * patch - size) // 2
        return (torch.arange(size, device=device) + offset) // patch, cells

    rows, n_rows = axis(h)
    cols, n_cols = axis(w)
    return (rows[:, None] * n_cols + cols[None, :]).flatten(), n_rows * n_cols


@with_autograd
def selectivity(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    patch: int = 8,
    baseline=0.0,
    score: str = "probability",
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> Result:
    """Area under the class score as patches are removed by decreasing relevance
    (lower is better). ``curves`` ``[N,P+1]`` (start included), ``x`` the removed share."""
    settings = dict(patch=patch, baseline=baseline, score=score)
    check_params("selectivity", settings, PARAMS)
    with frozen(model):
        model, inputs, maps, target, _ = F.prepare(model, inputs, maps, target)
        n, _c, h, w = inputs.shape
        ids, count = patch_ids(h, w, patch, inputs.device)
        ids = ids.expand(n, -1)
        sums = F.group_sums(maps, ids, count)
        order = torch.argsort(sums, dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(count, device=inputs.device).expand_as(order)
        )
        curves = F.cumulative(
            model, inputs, target, rank.gather(1, ids), torch.full((n,), count),
            start=inputs, finish=F.fill(inputs, baseline), score=score,
            batch_size=batch_size, memory=memory, desc=desc,
        )  # fmt: skip
    return Result(
        metric="selectivity",
        values=auc(curves),
        curves=curves,
        x=torch.arange(count + 1, dtype=torch.float32) / count,
        params={**settings, "baseline": F.describe(baseline)},
        extras={"target": target},
        higher_is_better=False,
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    r = selectivity(
        s.model, s.x, s.maps, s.target, batch_size=s.batch_size, memory=s.memory, **settings
    )
    return {"values": r.values, "curve": r.curves, "x": r.x}


register(
    Metric(
        "selectivity", "AUC of the score as patches go by decreasing relevance (lower is better)",
        _score, lower_is_better=True, kind="curve", params=PARAMS, default=False, order=205,
        curves={"": ("selectivity", "share of patches removed")},
        family="faithfulness",
    )
)  # fmt: skip

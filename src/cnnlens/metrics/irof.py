"""IROF, iterative removal of features (Rieger and Hansen, "IROF: a low resource
evaluation metric for explanation methods", ICLR 2020 workshop, Sec. 2).

Each image is cut into superpixels (SLIC, scikit-image's defaults: ``segments`` 100,
``compactness`` 10, as Quantus); superpixels are removed (set to the baseline, by
default the image's per-channel mean) one after another in decreasing order of their
mean relevance, and the class score is recorded relative to the unperturbed one. The
value is the area *over* that curve on ``[0, 1]`` (``1 - AUC``, trapezoid, start 1
included): higher is better, a good explanation makes the score fall first.

Quantus (``IROF.evaluate_batch``) returns ``S - trapz(p_1..p_S)`` on the unnormalised
axis, and its ``"mean"`` fill is the mean of the whole batch (``get_baseline_value``
without ``batched``), so an image's score there depends on the other images; here the
fill is per image. Segmentation runs once per image on the CPU (scikit-image); the
``sum S_i`` perturbed images run chunked, one forward each.
"""

from __future__ import annotations

import numpy as np
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
    "segments": Param("int", 100, min=1, help="SLIC's target number of superpixels"),
    "compactness": Param("float", 10.0, min=0, open_min=True),
    "baseline": Param("float|tensor", "mean", choices=("zero", "blur", "mean")),
    "score": F.SCORE,
}


def superpixels(inputs: torch.Tensor, *, segments: int = 100, compactness: float = 10.0):
    """SLIC labels ``[N,H*W]`` (0..S_i-1, contiguous) and counts ``S_i`` ``[N]``."""
    from skimage.segmentation import slic

    labels, counts = [], []
    for img in inputs.detach().cpu().double().numpy():
        seg = slic(np.moveaxis(img, 0, -1), n_segments=segments, compactness=compactness,
                   start_label=0)  # fmt: skip
        _, seg = np.unique(seg, return_inverse=True)
        labels.append(torch.from_numpy(seg.reshape(-1).astype(np.int64)))
        counts.append(int(seg.max()) + 1)
    return torch.stack(labels).to(inputs.device), torch.tensor(counts, device=inputs.device)


@with_autograd
def irof(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    segments: int = 100,
    compactness: float = 10.0,
    baseline="mean",
    score: str = "probability",
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> Result:
    """Area over the relative class score as superpixels go by decreasing mean relevance.

    ``curves`` ``[N,S+1]``: ``f(x_k) / f(x)`` after ``k`` superpixels (``S`` the most of
    any image; shorter curves repeat their last value), ``extras["segments"]`` ``S_i``.
    """
    settings = dict(segments=segments, compactness=compactness, baseline=baseline, score=score)
    check_params("irof", settings, PARAMS)
    with frozen(model):
        model, inputs, maps, target, logits = F.prepare(model, inputs, maps, target)
        n, _c, h, w = inputs.shape
        labels, counts = superpixels(inputs, segments=segments, compactness=compactness)
        s_max = int(counts.max())
        area = torch.zeros(n, s_max, dtype=torch.float64, device=inputs.device)
        area.scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.float64))
        mean = F.group_sums(maps, labels, s_max) / area.clamp_min(1)
        mean[area == 0] = -torch.inf  # absent segments go last
        order = torch.argsort(mean, dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(s_max, device=inputs.device).expand_as(order)
        )
        removal = rank.gather(1, labels)
        removed = F.fill(inputs, baseline)
        ends = counts.cumsum(0)
        starts = ends - counts

        def build(j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            img = torch.searchsorted(ends, j, right=True)
            k = j - starts[img] + 1
            gone = (removal[img] < k[:, None]).view(-1, 1, h, w)
            return torch.where(gone, removed[img], inputs[img]), img

        flat = F.scores(
            model, inputs, target, int(ends[-1]), build, score=score, batch_size=batch_size,
            memory=memory, desc=desc,
        )  # fmt: skip
        f_x = class_score(logits, target, score).double()
    steps = torch.arange(s_max + 1, device=inputs.device)
    img = torch.repeat_interleave(torch.arange(n, device=inputs.device), counts)
    k = torch.arange(flat.shape[0], device=inputs.device) - starts[img] + 1
    curves = torch.ones(n, s_max + 1, dtype=torch.float64, device=inputs.device)
    curves[img, k] = flat.double() / f_x[img]
    last = curves.gather(1, counts[:, None])
    curves = torch.where(steps[None] > counts[:, None], last, curves)
    within = (steps[None] <= counts[:, None]).double()
    total = (curves * within).sum(1) - curves[:, 0] / 2 - last[:, 0] / 2
    values = 1 - total / counts.double()
    return Result(
        metric="irof",
        values=values.float(),
        curves=curves.float(),
        params={**settings, "baseline": F.describe(baseline)},
        extras={"segments": counts, "target": target},
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    r = irof(s.model, s.x, s.maps, s.target, batch_size=s.batch_size, memory=s.memory, **settings)
    return {"values": r.values}


register(
    Metric(
        "irof", "area over the relative score as superpixels go by decreasing relevance",
        _score, params=PARAMS, default=False, order=204,
        family="faithfulness",
    )
)  # fmt: skip

"""Deletion and insertion (Petsiuk et al., RISE, BMVC 2018; eclique/RISE ``CausalMetric``).

Pixels are ordered by descending saliency (all channels of a pixel move
together). Deletion starts from the image and replaces ``step`` pixels per
iteration with zeros (in normalised space); insertion starts from a blurred
copy (11x11 Gaussian, sigma 5, per channel, RISE's ``gkern``) and puts the
image's pixels back. With ``n = ceil(HW / step)`` iterations there are ``n + 1``
scores (the start included); the score is the softmax probability of the
class (the model's top-1 on the unmodified image unless ``target`` is given)
and the value is RISE's AUC ``(sum s - s_0/2 - s_n/2) / n``.

Default ``step``: DRIB (paper 000) and RISE use 448 pixels on 224x224 images,
i.e. 113 scores of 0.9 % of the pixels each; other sizes keep that share:
``step = round(HW * 448 / 224**2)`` (9 pixels, 115 scores, on 32x32).

Batched: each map is ranked once; the image for (image ``i``, step ``k``) is
``where(rank_i < k * step, finish_i, start_i)``, built on the device inside
the chunk, and all ``N (n + 1)`` images run through
:func:`cnnlens.chunking.run_chunked`: one forward per (image, step).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ..accel import forward_runner
from ..attribution.base import resolve_target
from ..chunking import chunk_size, run_chunked
from ..errors import InputError
from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import Param
from ._common import as_maps, auc, check_inputs, check_model, class_score, descending_rank
from .registry import Metric, Scoring, register
from .result import Result

RISE_STEP_224 = 448


SCORE = Param("str", "probability", choices=("probability", "logit"))
FILL = Param(
    "float|tensor", "zero", choices=("zero", "blur", "mean"), help="fill of removed pixels"
)
# What evaluate / jobs may set (metric_params); batch_size and desc come from them.
PARAMS = {
    "step": Param("int", None, min=1, none=True, help="pixels per step; none: default_step"),
    "baseline": FILL,
    "score": SCORE,
}


def default_step(height: int, width: int) -> int:
    """Pixels per iteration: RISE/DRIB's 448 of 224x224 (0.9 %), scaled to ``height x width``."""
    return max(1, int(round(height * width * RISE_STEP_224 / (224 * 224))))


@functools.lru_cache(maxsize=8)
def _gkern_2d(klen: int, sigma: float) -> torch.Tensor:
    """RISE's ``gkern``: ``scipy.ndimage.gaussian_filter`` of a centred delta (sums to 1)."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((klen, klen))
    delta[klen // 2, klen // 2] = 1
    return torch.from_numpy(gaussian_filter(delta, sigma).astype("float32"))


def rise_blur(inputs: torch.Tensor, *, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Per-channel Gaussian blur with zero padding, exactly RISE's insertion substrate."""
    c = inputs.shape[1]
    kern = _gkern_2d(int(size), float(sigma)).to(inputs.device, inputs.dtype)
    weight = kern.expand(c, 1, size, size).contiguous()
    return F.conv2d(inputs, weight, padding=size // 2, groups=c)


def _baseline(inputs: torch.Tensor, baseline) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(inputs)
        if baseline == "blur":
            return rise_blur(inputs)
        if baseline == "mean":
            return inputs.mean((2, 3), keepdim=True).expand_as(inputs).contiguous()
        raise InputError(
            f"baseline must be 'zero', 'blur', 'mean', a number or a tensor, got {baseline!r}"
        )
    if isinstance(baseline, int | float):
        return torch.full_like(inputs, float(baseline))
    if isinstance(baseline, torch.Tensor):
        try:
            return baseline.to(inputs.device, inputs.dtype).expand_as(inputs).contiguous()
        except RuntimeError as exc:
            raise InputError(
                f"baseline {tuple(baseline.shape)} does not broadcast to {tuple(inputs.shape)}"
            ) from exc
    raise InputError(f"baseline must be a string, number or tensor, got {type(baseline).__name__}")


def causal_curves(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    *,
    start: torch.Tensor,
    finish: torch.Tensor,
    step: int,
    score: str = "probability",
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> torch.Tensor:
    """Scores ``[N, n+1]`` of images moving from ``start`` to ``finish`` in saliency order."""
    n, _c, h, w = inputs.shape
    n_steps = -(-(h * w) // step)
    s1 = n_steps + 1
    rank = descending_rank(maps)
    size = chunk_size(model, inputs, backward=False, batch_size=batch_size, memory=memory)
    run_model = forward_runner(model, inputs)
    device = inputs.device

    def run(a: int, b: int) -> torch.Tensor:
        j = torch.arange(a, b, device=device)
        img, k = j // s1, j % s1
        keep = (rank[img] < (k * step)[:, None]).view(-1, 1, h, w)
        x = torch.where(keep, finish[img], start[img])
        return class_score(run_model(x), target[img], score).float()

    return run_chunked(run, n * s1, size, desc=desc).view(n, s1)


def _causal(
    mode: str,
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target,
    *,
    step: int | None,
    baseline,
    score: str,
    batch_size: int | None,
    memory: int | float | str | None = None,
    desc: str | None,
) -> Result:
    model = check_model(model)
    inputs = check_inputs(inputs, model)
    from ..placement import model_device

    inputs = inputs.to(model_device(model))
    maps = as_maps(maps, like=inputs)
    h, w = inputs.shape[2:]
    step = default_step(h, w) if step is None else int(step)
    if step < 1:
        raise InputError(f"step must be a positive number of pixels, got {step}")
    with frozen(model):
        target, _ = resolve_target(model, inputs, target)
        substrate = _baseline(inputs, baseline)
        start, finish = (inputs, substrate) if mode == "deletion" else (substrate, inputs)
        curves = causal_curves(
            model,
            inputs,
            maps,
            target,
            start=start,
            finish=finish,
            step=step,
            score=score,
            batch_size=batch_size,
            memory=memory,
            desc=desc,
        )
    s1 = curves.shape[1]
    x = torch.clamp(torch.arange(s1, dtype=torch.float32) * step / (h * w), max=1.0)
    return Result(
        metric=mode,
        values=auc(curves),
        curves=curves,
        x=x,
        params={
            "step": step,
            "baseline": baseline if isinstance(baseline, str) else "custom",
            "score": score,
        },
        extras={"target": target},
        higher_is_better=mode == "insertion",
    )


@with_autograd
def deletion(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    step: int | None = None,
    baseline="zero",
    score: str = "probability",
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> Result:
    """RISE deletion: AUC of the class probability as the most salient pixels become zero.

    Lower is better. ``baseline`` ``"zero"`` (RISE), ``"blur"``, ``"mean"``,
    a number or a tensor broadcastable to ``inputs``; ``score`` ``"probability"``
    (RISE) or ``"logit"``; ``step`` pixels per iteration (default
    :func:`default_step`). ``curves`` ``[N, n+1]``, ``x`` the removed fraction.
    """
    return _causal(
        "deletion",
        model,
        inputs,
        maps,
        target,
        step=step,
        baseline=baseline,
        score=score,
        batch_size=batch_size,
        memory=memory,
        desc=desc,
    )


@with_autograd
def insertion(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    step: int | None = None,
    baseline="blur",
    score: str = "probability",
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> Result:
    """RISE insertion: AUC of the class probability as salient pixels return to a blurred image.

    Higher is better. Same arguments as :func:`deletion`; the default start is
    RISE's blur (11x11 Gaussian, sigma 5). Costs exactly as much as deletion.
    """
    return _causal(
        "insertion",
        model,
        inputs,
        maps,
        target,
        step=step,
        baseline=baseline,
        score=score,
        batch_size=batch_size,
        memory=memory,
        desc=desc,
    )


def _score(curve: str):
    def score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
        f = deletion if curve == "deletion" else insertion
        r = f(s.model, s.x, s.maps, s.target, batch_size=s.batch_size, memory=s.memory, **settings)
        return {"values": r.values, "curve": r.curves, "x": r.x}

    return score


register(
    Metric(
        "deletion", "RISE deletion AUC (lower is better)", _score("deletion"),
        lower_is_better=True, kind="curve", params=PARAMS, order=10,
        family="faithfulness",
        curves={"": ("deletion", "fraction of pixels removed")},
    )
)  # fmt: skip
register(
    Metric(
        "insertion", "RISE insertion AUC", _score("insertion"), kind="curve", params=PARAMS,
        order=20, curves={"": ("insertion", "fraction of pixels inserted")},
        family="faithfulness",
    )
)  # fmt: skip

"""ROAD, RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022; reference code ``tleemann/road_evaluation``).

The top (MoRF) or bottom (LeRF) fraction ``f`` of pixels by the map is removed
(all channels of a pixel together) and imputed with the paper's noisy linear
imputation (Sec. 4.2): every removed pixel equals the weighted mean of its
8 neighbours inside the image (weight 1/6 for the 4 direct, 1/12 for the 4
diagonal ones), solved jointly as one sparse linear system per image and
fraction, with the known pixels as boundary values; then Gaussian noise
``N(0, noise^2)`` is added to the imputed values. Removing ``floor(f HW)``
pixels follows Quantus' ``ROAD``.

The curve is the target's softmax probability at each fraction (``curves``
``[N,S]``); the value is its mean. MoRF: lower is better; LeRF: higher is
better. ``extras["correct"]`` is the paper's (and Quantus') measure, whether
the model's top-1 on the imputed image still is the target.

The linear systems are solved with ``scipy.sparse`` (direct solve, float64,
all channels as right-hand sides of one factorisation; block-diagonal groups
of small images share one solve); the imputed images of a chunk form one
tensor, and all images x fractions run through
:func:`cnnlens.chunking.run_chunked`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..accel import forward_runner
from ..attribution.base import resolve_target
from ..chunking import chunk_size, run_chunked
from ..errors import InputError
from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import Param
from ..placement import model_device
from ..seeding import Draws
from ._common import as_maps, check_inputs, check_model, class_score, descending_rank
from .registry import Metric, Scoring, register
from .result import Result

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# (row offset, column offset, weight) of the paper's imputation stencil; weights sum to 1.
NEIGHBOURS = (
    (-1, -1, 1 / 12),
    (-1, 0, 1 / 6),
    (-1, 1, 1 / 12),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (1, 1, 1 / 12),
)
# Unknowns per sparse solve: small images are grouped block-diagonally up to this size.
MAX_UNKNOWNS_PER_SOLVE = 1 << 15


PARAMS = {
    "fractions": Param("any", None, help="fractions in [0, 1)", validate=lambda v: _fractions(v)),
    "order": Param("str", "morf", choices=("morf", "lerf")),
    "noise": Param("float", 0.01, min=0),
    "score": Param("str", "probability", choices=("probability", "logit")),
    "seed": Param("int", 0),
}


def linear_impute(images: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """Images ``[B,C,H,W]`` with the pixels where ``removed`` ``[B,H,W]`` is true imputed.

    Solves ``sum_j w_j (v_p - v_j) = 0`` for every removed pixel ``p`` over its
    in-image neighbours ``j`` (known neighbours are constants), per channel, in
    float64. Every removed region touches a known pixel unless the whole image
    is removed, which raises :class:`InputError`. Returns a tensor on the
    images' device and dtype; no noise is added here.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    b, c, h, w = images.shape
    rem = removed.detach().to("cpu", torch.bool).numpy()
    if rem.shape != (b, h, w):
        raise InputError(f"removed must be [{b},{h},{w}], got {tuple(rem.shape)}")
    if rem.reshape(b, -1).all(1).any():
        raise InputError("cannot impute an image whose every pixel is removed")
    total = int(rem.sum())
    if total == 0:
        return images.clone()
    x = images.detach().to("cpu", torch.float64).numpy()
    var = np.full((b, h, w), -1, dtype=np.int64)
    var[rem] = np.arange(total)
    pad_rem = np.pad(rem, ((0, 0), (1, 1), (1, 1)))
    pad_in = np.pad(np.ones((b, h, w), bool), ((0, 0), (1, 1), (1, 1)))
    pad_var = np.pad(var, ((0, 0), (1, 1), (1, 1)), constant_values=-1)
    pad_x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    diag = np.zeros(total)
    rhs = np.zeros((total, c))
    rows, cols, vals = [], [], []
    for dy, dx, weight in NEIGHBOURS:
        window = (slice(None), slice(1 + dy, 1 + dy + h), slice(1 + dx, 1 + dx + w))
        n_in = pad_in[window][rem]
        n_rem = pad_rem[window][rem]
        diag += weight * n_in
        known = n_in & ~n_rem
        xn = pad_x[:, :, window[1], window[2]].transpose(0, 2, 3, 1)[rem]  # [U,C]
        rhs += weight * known[:, None] * xn
        ids = np.flatnonzero(n_rem)
        rows.append(ids)
        cols.append(pad_var[window][rem][ids])
        vals.append(np.full(ids.size, -weight))
    rows.append(np.arange(total))
    cols.append(np.arange(total))
    vals.append(diag)
    system = coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(total, total)
    ).tocsr()
    # Unknowns are numbered image by image, so the system is block diagonal: solve groups of
    # whole images together (few calls for small images, bounded factorisations for large).
    counts = rem.reshape(b, -1).sum(1)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    solution = np.empty((total, c))
    lo = 0
    for i in range(1, b + 1):
        if i == b or bounds[i + 1] - bounds[lo] > MAX_UNKNOWNS_PER_SOLVE:
            s, e = bounds[lo], bounds[i]
            if e > s:
                part = spsolve(system[s:e, s:e].tocsc(), rhs[s:e])
                solution[s:e] = np.asarray(part).reshape(e - s, c)
            lo = i
    out = x.transpose(0, 2, 3, 1).copy()  # [B,H,W,C]
    out[rem] = solution
    return torch.from_numpy(out.transpose(0, 3, 1, 2).copy()).to(images.device, images.dtype)


def _fractions(fractions) -> torch.Tensor:
    try:
        frac = torch.as_tensor(fractions, dtype=torch.float64).flatten()
    except (TypeError, ValueError) as exc:
        raise InputError(f"fractions must be numbers in [0, 1), got {fractions!r}") from exc
    if frac.numel() < 1:
        raise InputError("fractions must hold at least one fraction")
    if not torch.isfinite(frac).all() or frac.min() < 0 or frac.max() >= 1:
        raise InputError(
            f"fractions must lie in [0, 1) (1 would remove every pixel), got {frac.tolist()}"
        )
    return frac


@with_autograd
def road(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    fractions: Sequence[float] | torch.Tensor = DEFAULT_FRACTIONS,
    order: str = "morf",
    noise: float = 0.01,
    score: str = "probability",
    seed: int = 0,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> Result:
    """ROAD curve and its mean: target probability after removing and imputing a fraction.

    ``order`` ``"morf"`` (most relevant first, lower is better) or ``"lerf"``
    (least relevant first, higher is better); ``fractions`` in ``[0, 1)``
    (default 10 %, ..., 90 %); ``noise`` the standard deviation of the
    imputation noise in normalised input units (the paper's 0.01), one draw per
    fraction from ``seed`` alone, the same for every image (so an image's curve
    does not depend on its batch); ``score`` ``"probability"`` or
    ``"logit"``. ``curves`` ``[N,S]``, ``x`` the fractions; ``extras``
    ``correct`` ``[N,S]`` (top-1 still the target) and ``target``.
    """
    model = check_model(model)
    inputs = check_inputs(inputs, model).to(model_device(model))
    maps = as_maps(maps, like=inputs)
    if order not in ("morf", "lerf"):
        raise InputError(f"order must be 'morf' or 'lerf', got {order!r}")
    if not isinstance(noise, int | float) or not math.isfinite(noise) or noise < 0:
        raise InputError(f"noise must be a finite number >= 0, got {noise!r}")
    frac = _fractions(fractions)
    n, _c, h, w = inputs.shape
    hw = h * w
    counts = torch.floor(frac * hw + 1e-9).long().to(inputs.device)  # pixels removed, [S]
    s = counts.numel()
    rank = descending_rank(maps)  # [N,HW], 0 = most relevant
    device = inputs.device
    draws = Draws(int(seed), s, inputs.shape[1:], device=device, dtype=inputs.dtype)
    with frozen(model):
        target, _ = resolve_target(model, inputs, target)
        size = chunk_size(model, inputs, backward=False, batch_size=batch_size, memory=memory)
        run_model = forward_runner(model, inputs)

        def run(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
            j = torch.arange(a, b, device=device)
            img, k = j // s, counts[j % s]
            r = rank[img]
            removed = r < k[:, None] if order == "morf" else r >= (hw - k)[:, None]
            removed = removed.view(-1, h, w)
            x = linear_impute(inputs[img], removed)
            if noise > 0:
                x = x + noise * draws(j % s) * removed[:, None]
            logits = run_model(x)
            t = target[img]
            return class_score(logits, t, score).float(), (logits.argmax(1) == t).float()

        scores, correct = run_chunked(run, n * s, size, desc=desc)
    curves, correct = scores.view(n, s), correct.view(n, s)
    return Result(
        metric="road",
        values=curves.mean(1),
        curves=curves,
        x=frac.float(),
        params={"order": order, "fractions": frac.tolist(), "noise": float(noise), "score": score},
        extras={"correct": correct, "target": target},
        higher_is_better=order == "lerf",
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    settings.setdefault("seed", s.seed)
    r = road(s.model, s.x, s.maps, s.target, batch_size=s.batch_size, memory=s.memory, **settings)
    out = {"values": r.values, "curve": r.curves}
    return out if r.x is None else {**out, "x": r.x}


register(
    Metric(
        "road", "ROAD MoRF: mean probability, noisy linear imputation (lower is better)",
        _score, lower_is_better=True, kind="curve", params=PARAMS, default=False, order=130,
        family="faithfulness",
    )
)  # fmt: skip

"""LIME and Kernel SHAP: local linear surrogates fitted on segments (survey 001).

Both sample coalitions of segments (:mod:`.segments`), evaluate the model on
every distinct image x coalition in chunks (:mod:`cnnlens.chunking`; a coalition
drawn twice is evaluated once), and fit one linear model per image in torch,
batched over images:

- LIME (Ribeiro et al. 2016): coalitions kept with probability 1/2, weights
  ``sqrt(exp(-d^2 / width^2))`` with ``d`` the cosine distance between the
  coalition and the all-ones vector (the ``lime`` package's image kernel),
  weighted ridge with an unpenalised intercept (``alpha`` 1, as ``lime``).
- Kernel SHAP (Lundberg & Lee 2017): coalitions with the Shapley kernel (size
  drawn with ``P(k) ~ (M-1)/(k(M-k))``, then a uniform subset), the empty and
  full coalitions as exact constraints, i.e. weighted least squares with
  ``phi_0 = f(baseline)`` and ``sum phi = f(x) - f(baseline)`` (efficiency).
  When ``n_samples >= 2^M - 2`` every coalition is enumerated with its exact
  kernel weight, which gives the exact Shapley values of the segment game.

Scores are the target logits (as Captum with a logit model). Coalitions are drawn
from the seed and the image's segment count alone (images with the same count get
the same coalitions), so an image's map does not depend on the other images of
the call; a group with fewer rows than another (every coalition enumerated) is
padded with rows of weight 0.

Fewer passes (issue 33, item 5; opt-in, ``tolerance=None`` keeps the fixed count):
with ``tolerance`` the coalitions are evaluated in blocks of ``block``; after each
block (from the third on) the surrogate is refitted on the rows so far and an image
stops once its coefficients changed by at most ``tolerance`` (relative, L2) since the
previous block. Rows not evaluated get weight 0, so the map is the fit on the rows
spent (``extras["passes"]``). Each image stops on its own.
"""

from __future__ import annotations

import torch

from ..accel import forward_runner
from ..chunking import run_chunked
from ..errors import InputError
from ..params import Param
from ..types import Explanation
from . import register
from ._perturb import baseline_like, generator, positive_float, positive_int, target_scores
from .base import BATCH_SIZE, FILL, MEMORY, SEED, Method
from .segments import (
    all_coalitions,
    apply_coalitions,
    check_segments,
    sample_coalitions,
    segment,
)

_COMMON = {
    "n_samples": Param("int", 1000, min=1),
    "segments": Param(
        "str|tensor",
        "slic",
        help="'slic', 'slic:<n>', 'grid', 'grid:<k>' or labels",
        validate=lambda v: check_segments(v),
    ),
    "baseline": FILL,
    "tolerance": Param(
        "float",
        None,
        min=0,
        max=1,
        open_min=True,
        none=True,
        help="stop when the coefficients change by at most this between blocks (None: all)",
    ),
    "block": Param("int", 100, min=1, help="samples per convergence check"),
    "seed": SEED,
    "batch_size": BATCH_SIZE,
    "memory": MEMORY,
}


def _solve_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def solve_normal_equations(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``gram [N,M,M] @ out = rhs [N,M]`` per image; a singular ``gram`` (fewer distinct
    coalitions than segments, or a segment in all or none of them) gets the minimum-norm
    least-squares solution, from the pseudo-inverse, instead of an error."""
    out, info = torch.linalg.solve_ex(gram, rhs)
    bad = (info != 0) | ~torch.isfinite(out).all(1)
    if bad.any():
        pinv = torch.linalg.pinv(gram[bad], hermitian=True)
        out[bad] = (pinv @ rhs[bad][:, :, None])[:, :, 0]
    return out


def weighted_ridge(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, valid: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image weighted ridge with an unpenalised intercept (sklearn ``Ridge``'s solution).

    ``x [N,S,M]``, ``y [N,S]``, ``w [N,S]``, ``valid [N,M]``; returns ``coef [N,M]``
    (0 on padded features) and ``intercept [N]``.
    """
    dt = _solve_dtype(x.device)
    x, y, w = x.to(dt) * valid[:, None].to(dt), y.to(dt), w.to(dt)
    wsum = w.sum(1, keepdim=True).clamp_min(1e-300)
    x_mean = (w[:, :, None] * x).sum(1) / wsum
    y_mean = (w * y).sum(1, keepdim=True) / wsum
    xc, yc = x - x_mean[:, None], y - y_mean
    gram = xc.transpose(1, 2) @ (w[:, :, None] * xc)
    # padded features get a unit diagonal so they solve to 0 even with alpha = 0
    diag = torch.where(
        valid, torch.full_like(valid, alpha, dtype=dt), torch.ones_like(valid, dtype=dt)
    )
    gram = gram + torch.diag_embed(diag)
    rhs = (xc.transpose(1, 2) @ (w * yc)[:, :, None])[:, :, 0]
    coef = solve_normal_equations(gram, rhs)
    intercept = y_mean[:, 0] - (x_mean * coef).sum(1)
    return coef.float(), intercept.float()


def constrained_shapley_regression(
    z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, valid: torch.Tensor, total: torch.Tensor
) -> torch.Tensor:
    """Kernel SHAP's weighted least squares with ``sum phi = total`` and no intercept.

    ``y`` are scores minus ``f(baseline)``. The constraint is eliminated with
    the last valid feature ``l``: ``phi_l = total - sum_{j != l} phi_j``
    (Lundberg & Lee 2017; the ``shap`` package's solver). Returns ``[N, M]``.
    """
    dt = _solve_dtype(z.device)
    n, _s, m = z.shape
    last = valid.sum(1) - 1
    z, y, w, total = z.to(dt), y.to(dt), w.to(dt), total.to(dt)
    z_last = z.gather(2, last[:, None, None].expand(-1, z.shape[1], 1))
    free = valid.clone()
    free[torch.arange(n, device=z.device), last] = False
    x = (z - z_last) * free[:, None].to(dt)
    target = y - z_last[:, :, 0] * total[:, None]
    gram = x.transpose(1, 2) @ (w[:, :, None] * x)
    gram = gram + torch.diag_embed((~free).to(dt))
    rhs = (x.transpose(1, 2) @ (w * target)[:, :, None])[:, :, 0]
    phi = solve_normal_equations(gram, rhs) * free.to(dt)
    phi[torch.arange(n, device=z.device), last] = total - phi.sum(1)
    return phi.float()


def distinct_coalitions(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct (image, coalition) pairs among ``z [N,S,M]``: their image index
    ``[K]``, their coalitions ``[K,M]``, and for each of the ``N*S`` draws its row in
    them. Kernel SHAP draws small and large coalitions many times over."""
    n, s, m = z.shape
    img = torch.arange(n, device=z.device).repeat_interleave(s)
    keyed = torch.cat([img[:, None].to(z.dtype), z.reshape(n * s, m)], 1)
    rows, where = torch.unique(keyed, dim=0, return_inverse=True)
    return rows[:, 0].long(), rows[:, 1:], where


def shapley_kernel_weights(z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(M-1) / (C(M,k) k (M-k))`` per coalition ``[N,S]`` (0 for empty or full)."""
    m = valid.sum(1, keepdim=True).to(torch.float64)
    k = (z * valid[:, None]).sum(2).to(torch.float64)
    log_binom = torch.lgamma(m + 1) - torch.lgamma(k + 1) - torch.lgamma(m - k + 1)
    inside = (k >= 1) & (k <= m - 1)
    weight = torch.exp(-log_binom) * (m - 1) / (k * (m - k)).clamp_min(1e-12)
    return torch.where(inside, weight, torch.zeros_like(weight))


class _SegmentSurrogate(Method):
    """Shared pipeline: segment, draw coalitions, evaluate them batched, fit, paint."""

    hyperparameters = _COMMON
    default_samples = 1000
    family = "Surrogate"

    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor, logits: torch.Tensor
    ) -> Explanation:
        p = self.params
        n_samples = positive_int("n_samples", p.get("n_samples", self.default_samples))
        labels, valid = segment(inputs, p.get("segments", "slic"))
        base = baseline_like(p.get("baseline", 0.0), inputs)
        z, w = self.coalitions(valid, n_samples, p.get("seed", 0))
        n, s = z.shape[0], z.shape[1]
        run = forward_runner(self.model, inputs)
        tolerance = p.get("tolerance")
        if tolerance is not None:
            return self._adaptive(inputs, target, logits, labels, valid, base, z, w, run, tolerance)
        # a coalition drawn twice for an image is evaluated once
        img, distinct, where = distinct_coalitions(z)

        def coalition_scores(start: int, stop: int) -> torch.Tensor:
            rows = img[start:stop]
            x = apply_coalitions(inputs, base, labels, rows, distinct[start:stop])
            return target_scores(run, x, target[rows])

        size = self.chunk(inputs, backward=False)
        scores = run_chunked(coalition_scores, len(img), size, desc=self.name)[where].view(n, s)
        full = logits.gather(1, target[:, None])[:, 0]
        coef, extras = self.fit(z, scores, w, valid, full, inputs, base, target)
        maps = coef.gather(1, labels.view(n, -1)).view(n, 1, *labels.shape[1:])
        raw = maps.expand(-1, inputs.shape[1], -1, -1).contiguous()
        return self.explanation(maps, target, raw=raw, coefficients=coef, segments=labels, **extras)

    def _adaptive(self, inputs, target, logits, labels, valid, base, z, w, run, tolerance):
        """Blocks of coalitions until each image's coefficients settle (module docstring)."""
        tolerance = positive_float("tolerance", tolerance)
        if tolerance >= 1:
            raise InputError(f"tolerance is a relative change in (0, 1), got {tolerance}")
        block = positive_int("block", self.params.get("block", 100))
        n, s = z.shape[0], z.shape[1]
        full = logits.gather(1, target[:, None])[:, 0]
        scores = torch.zeros(n, s, device=inputs.device)
        spent = torch.zeros(n, dtype=torch.long, device=inputs.device)
        active = torch.arange(n, device=inputs.device)
        previous = None
        size = self.chunk(inputs, backward=False)
        rows = torch.arange(s, device=inputs.device)
        for blocks, start in enumerate(range(0, s, block), 1):
            stop = min(start + block, s)
            img, distinct, where = distinct_coalitions(z[active, start:stop])
            owner = active[img]

            def coalition_scores(a: int, b: int, owner=owner, distinct=distinct) -> torch.Tensor:
                x = apply_coalitions(inputs, base, labels, owner[a:b], distinct[a:b])
                return target_scores(run, x, target[owner[a:b]])

            part = run_chunked(coalition_scores, len(img), size, desc=self.name)
            scores[active, start:stop] = part[where].view(len(active), stop - start)
            spent[active] = stop
            if stop >= s:
                break
            kept = w[active] * (rows[None] < stop)
            coef, _ = self.fit(
                z[active],
                scores[active],
                kept,
                valid[active],
                full[active],
                inputs[active],
                base[active],
                target[active],
            )
            if previous is not None and blocks >= 3:
                change = (coef - previous).norm(dim=1) / coef.norm(dim=1).clamp_min(1e-12)
                done = change <= tolerance
                active, coef = active[~done], coef[~done]
                if len(active) == 0:
                    break
            previous = coef
        kept = w * (rows[None] < spent[:, None])
        coef, extras = self.fit(z, scores, kept, valid, full, inputs, base, target)
        maps = coef.gather(1, labels.view(n, -1)).view(n, 1, *labels.shape[1:])
        raw = maps.expand(-1, inputs.shape[1], -1, -1).contiguous()
        return self.explanation(
            maps, target, raw=raw, coefficients=coef, segments=labels, passes=spent, **extras
        )

    def coalitions(
        self, valid: torch.Tensor, n_samples: int, seed: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Coalitions ``[N,S,M_max]`` and their weights ``[N,S]`` (float64): for each segment
        count ``m``, :meth:`draw` from a generator seeded with ``seed``, used by every image
        with ``m`` segments; rows past a group's own count are padding of weight 0."""
        counts = valid.sum(1)
        drawn = {
            m: self.draw(m, n_samples, generator(valid.device, seed), valid.device)
            for m in counts.unique().tolist()
        }
        n, m_max = valid.shape
        s = max(zm.shape[0] for zm, _ in drawn.values())
        z = torch.zeros(n, s, m_max, device=valid.device)
        w = torch.zeros(n, s, dtype=torch.float64, device=valid.device)
        for m, (zm, wm) in drawn.items():
            rows = (counts == m).nonzero()[:, 0]
            z[rows[:, None], : zm.shape[0], :m] = zm
            w[rows, : zm.shape[0]] = wm.to(w.dtype)
        return z, w

    def draw(
        self, m: int, n_samples: int, g: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Coalitions ``[S,m]`` of ``m`` segments and their weights ``[S]``."""
        raise NotImplementedError

    def fit(self, z, scores, w, valid, full, inputs, base, target):
        raise NotImplementedError


@register
class Lime(_SegmentSurrogate):
    """LIME on segments: ``n_samples`` (1000), ``segments`` ("slic"), ``baseline`` (0),
    ``kernel_width`` (0.25), ``alpha`` (ridge penalty, 1.0), ``seed``, ``batch_size``."""

    name = "lime"
    description = "LIME: weighted ridge surrogate on superpixel coalitions"
    hyperparameters = {
        **_COMMON,
        "kernel_width": Param("float", 0.25, min=0, open_min=True),
        "alpha": Param("float", 1.0, min=0, help="ridge penalty"),
    }

    def draw(self, m, n_samples, g, device):
        width = positive_float("kernel_width", self.params.get("kernel_width", 0.25))
        valid = torch.ones(1, m, dtype=torch.bool, device=device)
        z = sample_coalitions(valid, n_samples, g, shapley=False)[0]
        distance = 1 - torch.sqrt(z.sum(1) / m)
        return z, torch.sqrt(torch.exp(-(distance**2) / width**2))

    def fit(self, z, scores, w, valid, full, inputs, base, target):
        alpha = positive_float("alpha", self.params.get("alpha", 1.0), allow_zero=True)
        coef, intercept = weighted_ridge(z, scores, w, valid, alpha)
        return coef, {"intercept": intercept, "weights": w}


@register
class KernelShap(_SegmentSurrogate):
    """Kernel SHAP on segments: ``n_samples`` (1000; all coalitions when
    ``2^M - 2 <= n_samples``), ``segments`` ("slic"), ``baseline`` (0), ``seed``,
    ``batch_size``. Attributions sum to ``f(x) - f(baseline)`` per image."""

    name = "kernel-shap"
    description = "Kernel SHAP: Shapley-kernel regression on superpixel coalitions"

    def draw(self, m, n_samples, g, device):
        valid = torch.ones(1, m, dtype=torch.bool, device=device)
        if m < 31 and 2**m - 2 <= n_samples:
            z = all_coalitions(m, device)
            return z, shapley_kernel_weights(z[None], valid)[0]
        z = sample_coalitions(valid, n_samples, g, shapley=True)[0]
        return z, torch.ones(z.shape[0], device=device)

    def fit(self, z, scores, w, valid, full, inputs, base, target):
        empty = target_scores(forward_runner(self.model, base), base.contiguous(), target)
        phi = constrained_shapley_regression(z, scores - empty[:, None], w, valid, full - empty)
        return phi, {"base_value": empty}

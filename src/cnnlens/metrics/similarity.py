"""Batched similarity of two sets of maps: Spearman rank correlation and SSIM, in torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def average_rank(x: torch.Tensor) -> torch.Tensor:
    """Ranks ``[N,P]`` of each row (1-based, ties get their average rank, as scipy's rankdata)."""
    n, p = x.shape
    values, order = torch.sort(x, dim=1, stable=True)
    new_group = torch.ones_like(values, dtype=torch.bool)
    new_group[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new_group.long().cumsum(1) - 1  # [N,P] group id per sorted position
    offset = (torch.arange(n, device=x.device) * p)[:, None]
    gid = (group + offset).flatten()
    pos = torch.arange(1, p + 1, device=x.device, dtype=torch.float64).expand(n, p).flatten()
    sums = torch.zeros(n * p, dtype=torch.float64, device=x.device).index_add_(0, gid, pos)
    counts = torch.zeros(n * p, dtype=torch.float64, device=x.device).index_add_(
        0, gid, torch.ones_like(pos)
    )
    sorted_rank = (sums / counts.clamp_min(1))[gid].view(n, p)
    ranks = torch.empty_like(sorted_rank)
    ranks.scatter_(1, order, sorted_rank)
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation per image of ``[N,...]`` tensors (NaN when a map is constant)."""
    ra, rb = average_rank(a.flatten(1)), average_rank(b.flatten(1))
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    out = (ra * rb).sum(1) / den
    return torch.where(den > 0, out, torch.full_like(out, float("nan"))).float()


def _unit(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(x)


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 7) -> torch.Tensor:
    """Mean SSIM per image of ``[N,1,H,W]`` maps, each scaled to [0, 1] first.

    Wang et al. 2004 with a uniform ``window`` (7, scikit-image's default),
    sample covariances, K1 = 0.01, K2 = 0.03, data range 1, valid windows only.
    """
    a, b = _unit(a.double()), _unit(b.double())
    window = min(window, a.shape[-1], a.shape[-2])
    if window % 2 == 0:
        window -= 1
    npix = window * window
    cov_norm = npix / (npix - 1) if npix > 1 else 1.0

    def mean(t):
        return F.avg_pool2d(t, window, stride=1)

    ux, uy = mean(a), mean(b)
    vx = cov_norm * (mean(a * a) - ux * ux)
    vy = cov_norm * (mean(b * b) - uy * uy)
    vxy = cov_norm * (mean(a * b) - ux * uy)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()

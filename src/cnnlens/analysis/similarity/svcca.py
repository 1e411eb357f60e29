"""Singular vector canonical correlation analysis (SVCCA) of two representations.

Raghu et al. 2017, "SVCCA: Singular Vector Canonical Correlation Analysis
for Deep Learning Dynamics and Interpretability" (NeurIPS), section 2: (1)
the SVD of each centred activation matrix keeps the top directions that
explain ``keep`` (99 %) of its variance; (2) CCA between the two reduced
subspaces gives canonical correlations ``rho_1 >= rho_2 >= ...``; the
similarity is their mean. The canonical correlations are the singular values
of ``Q_x^T Q_y`` with ``Q`` orthonormal bases of the reduced matrices (the
whitened cross-covariance ``S_xx^-1/2 S_xy S_yy^-1/2``), in float64.

CCA fits ``min(k_x, k_y)`` directions to ``n`` images: with ``n`` not well
above the kept dimensions every correlation approaches 1, so use pooled
features or many images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import InputError
from .cka import as_matrix, centre


@dataclass(frozen=True)
class SVCCAResult:
    """Mean canonical correlation ``similarity``, the ``correlations`` (descending) and the
    number of SVD directions kept of each representation, ``dims``."""

    similarity: float
    correlations: torch.Tensor
    dims: tuple[int, int]


def svd_reduce(x: torch.Tensor, keep: float = 0.99) -> torch.Tensor:
    """``[n, k]`` projection of centred ``x`` on its top ``k`` singular directions, ``k`` the
    fewest that explain ``keep`` of the variance (sum of squared singular values)."""
    if not 0 < float(keep) <= 1:
        raise InputError(f"keep (share of variance to keep) must lie in (0, 1], got {keep!r}")
    x = centre(as_matrix(x))
    u, s, _vh = torch.linalg.svd(x, full_matrices=False)
    rank = int((s > s.max().clamp_min(0) * max(x.shape) * torch.finfo(s.dtype).eps).sum())
    if rank == 0:
        return x[:, :0]
    energy = s[:rank].square().cumsum(0)
    share = energy / energy[-1]
    k = min(rank, int((share < float(keep) - 1e-12).sum()) + 1)
    return u[:, :k] * s[:k]


def canonical_correlations(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Canonical correlations (descending) of centred full-rank ``[n, k1]`` and ``[n, k2]``."""
    qx, _ = torch.linalg.qr(x)
    qy, _ = torch.linalg.qr(y)
    return torch.linalg.svdvals(qx.T @ qy).clamp(0, 1)


def svcca(x: torch.Tensor, y: torch.Tensor, *, keep: float = 0.99) -> SVCCAResult:
    """SVCCA of ``x`` ``[n, p1]`` and ``y`` ``[n, p2]`` (rows: the same images).

    NaN similarity when one representation is constant (nothing to keep).
    """
    x, y = as_matrix(x, "x"), as_matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise InputError(
            f"the two representations must describe the same images: {x.shape[0]} rows vs "
            f"{y.shape[0]}"
        )
    if x.shape[0] < 2:
        raise InputError(f"SVCCA needs at least 2 images (rows), got {x.shape[0]}")
    xr, yr = svd_reduce(x, keep), svd_reduce(y, keep)
    if xr.shape[1] == 0 or yr.shape[1] == 0:
        empty = torch.zeros(0, dtype=torch.float64)
        return SVCCAResult(float("nan"), empty, (xr.shape[1], yr.shape[1]))
    rho = canonical_correlations(xr, yr).cpu()
    return SVCCAResult(float(rho.mean()), rho, (xr.shape[1], yr.shape[1]))

"""Disentanglement of influential sets: Jaccard overlap between classes.

Paper 002 (section 3.2) asks for class index sets ``J_y`` with minimal
overlap ``J_{y1} & J_{y2}``; this measures it as the Jaccard index
``|J_a & J_b| / |J_a | J_b|`` for every pair of classes.
"""

from __future__ import annotations

import torch

from .influential import InfluentialFeatures


def jaccard_matrix(influential: InfluentialFeatures) -> torch.Tensor:
    """``[K,K]`` Jaccard index between the influential sets of every pair of classes."""
    mask = influential.mask_.float()
    inter = mask @ mask.T
    sizes = mask.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    return (inter / union.clamp_min(1)).cpu()


def mean_overlap(matrix: torch.Tensor) -> float:
    """Mean Jaccard index over distinct pairs of classes (the off-diagonal entries)."""
    k = matrix.shape[0]
    if k < 2:
        return float("nan")
    off = ~torch.eye(k, dtype=torch.bool)
    return float(matrix[off].mean())

"""XGrad-CAM (Fu et al. 2020, "Axiom-based Grad-CAM: towards accurate visualization and
explanation of CNNs"), eq. (13).

Channel ``k`` is weighted by its gradient averaged with the activations' own
weights, ``w_k = sum_ij (A_k,ij / sum_ij A_k,ij) dS/dA_k,ij``, the choice the paper
derives from the sensitivity and conservation axioms; the map is
``ReLU(sum_k w_k A_k)``. A channel whose activations sum to 0 gets weight 0.
"""

from __future__ import annotations

import torch

from . import register
from .cam import CamMethod


def xgrad_weights(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``[n,k,1,1]`` weights ``sum(A * g) / sum(A)`` per channel (0 where ``sum(A) = 0``)."""
    total = a.sum((2, 3), keepdim=True)
    weighted = (a * g).sum((2, 3), keepdim=True)
    safe = torch.where(total != 0, total, torch.ones_like(total))
    return torch.where(total != 0, weighted / safe, torch.zeros_like(total))


@register
class XGradCAM(CamMethod):
    """``ReLU(sum_k w_k A_k)`` with ``w_k = sum(A_k * g_k) / sum(A_k)`` (Fu et al. 2020)."""

    name = "xgrad-cam"
    description = "XGrad-CAM: channels weighted by their activation-weighted average gradient"

    def combine(self, a, g, target):
        return (xgrad_weights(a, g) * a).sum(1, keepdim=True).clamp_min(0)

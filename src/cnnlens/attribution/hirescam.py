"""HiResCAM (Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful
explanations of convolutional neural networks"), eq. (3).

The gradient is multiplied element-wise with the activations and summed over
channels, without Grad-CAM's averaging of the gradient over locations:
``ReLU(sum_k dS/dA_k * A_k)``. When the layer feeds global average pooling and a
linear layer directly the gradient is the same at every location and HiResCAM
equals Grad-CAM (the paper's section 3.2).
"""

from __future__ import annotations

from . import register
from .cam import CamMethod


@register
class HiResCAM(CamMethod):
    """``ReLU(sum_k g_k * A_k)`` at the layer (Draelos & Carin 2020, eq. 3)."""

    name = "hirescam"
    description = "HiResCAM: gradient times activation per location, summed over channels"

    def combine(self, a, g, target):
        return (g * a).sum(1, keepdim=True).clamp_min(0)

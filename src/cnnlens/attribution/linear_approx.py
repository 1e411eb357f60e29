"""Linear approximation: the first-order Taylor term of the target score at a layer,
``sum_k dS/dA_k * A_k`` per location, signed (no ReLU).

Baseline (a) of the re-label distillation paper's Fig. 4 (paper 004). The paper gives it
no definition or citation; its baselines and figure follow the extremal-perturbation
comparison (Fong et al. 2019, TorchRay), where "linear approximation" is the gradient
method applied at an intermediate layer: activation times its gradient, summed over
channels, at the last convolutional stage (VGG16 ``features.29``). That is what this is:
HiResCAM's sum without HiResCAM's ReLU, so negative evidence stays negative. Maps are
upsampled to the input (``extras["layer_map"]``: at the layer). Paper 004's Table 1 has
no row for it; ``benchmarks/relabel.py`` adds one.
"""

from __future__ import annotations

from . import register
from .cam import CamMethod


@register
class LinearApproximation(CamMethod):
    """``sum_k g_k * A_k`` at the layer (the linear approximation of the score, signed)."""

    name = "linear-approx"
    description = "linear approximation: gradient times activation at a layer, summed over channels"

    def combine(self, a, g, target):
        return (g * a).sum(1, keepdim=True)

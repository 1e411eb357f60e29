"""Weight initialisation shared by cnnlens' own nets.

Kaiming (He) normal initialisation for convolutions and linear layers
(He et al., "Delving Deep into Rectifiers", 2015, eq. 10, fan-out mode as in
the ResNet paper), BatchNorm scale 1 and shift 0, biases 0.
"""

from __future__ import annotations

from torch import nn


def kaiming_init(model: nn.Module) -> nn.Module:
    """Initialise every conv / linear / batch-norm layer of ``model`` in place."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model

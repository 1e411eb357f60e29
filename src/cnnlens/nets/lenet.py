"""LeNet-5 (LeCun et al., "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE 1998, section II.B) for 32x32 inputs.

C1 conv 5x5 -> 6, S2 2x2 pool, C3 conv 5x5 -> 16, S4 2x2 pool, C5 conv 5x5
-> 120 (1x1 at 32x32; an adaptive average pool keeps larger inputs working),
F6 linear 120 -> 84 and the ``head`` linear 84 -> num_classes. Modern
choices: ReLU instead of scaled tanh, max pooling instead of trainable
subsampling, full C1-C3 connectivity. Works with 1 (MNIST padded to 32x32)
or 3 input channels.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import kaiming_init


class LeNet5(nn.Module):
    """LeNet-5; ``forward_features`` is the 84-d F6 output after its ReLU."""

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.conv3 = nn.Conv2d(16, 120, 5)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.head = nn.Linear(84, num_classes)
        kaiming_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The vector the head reads: F6 after ReLU, ``[N, 84]``."""
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.pool3(self.relu3(self.conv3(x))).flatten(1)
        return self.relu4(self.fc(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build(*, num_classes: int = 10, in_channels: int = 3) -> LeNet5:
    """LeNet-5 for 32x32 inputs with ``in_channels`` 1 or 3."""
    return LeNet5(num_classes=num_classes, in_channels=in_channels)

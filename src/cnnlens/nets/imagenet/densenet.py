"""DenseNet-121 in torchvision's layout (Huang et al., "Densely Connected
Convolutional Networks", CVPR 2017, Table 1, DenseNet-BC with k = 32).

``features`` holds ``conv0`` (7x7/2, 64) - ``norm0`` - ``relu0`` - ``pool0``
(3x3/2 max), four dense blocks of 6, 12, 24 and 16 layers with transitions
between them (BN-ReLU-1x1 conv halving the channels - 2x2 average pool) and
``norm5``; ``classifier`` is Linear(1024, K). A dense layer is
BN-ReLU-1x1 conv (4k) - BN-ReLU-3x3 conv (k) on the concatenation of every
earlier output of its block (Huang et al., eq. 2).

As in torchvision, the final ReLU is the functional ``F.relu(inplace=True)``
in ``forward`` (no module a hook can see), the others are ``inplace=True``
modules, and a dense block returns the concatenation of its inputs and all
its layers' outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BLOCKS = (6, 12, 24, 16)
GROWTH = 32
BOTTLENECK = 4


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv to ``4k`` channels, BN-ReLU-3x3 conv to ``k`` (Huang et al., section 3)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        width = BOTTLENECK * GROWTH
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, GROWTH, 3, padding=1, bias=False)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(inputs, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    """``denselayer1..n``; each reads all earlier maps, the block returns them all concatenated."""

    def __init__(self, layers: int, in_channels: int) -> None:
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_channels + i * GROWTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]
        for layer in self.values():
            maps.append(layer(maps))
        return torch.cat(maps, 1)


class Transition(nn.Sequential):
    """BN - ReLU - 1x1 conv - 2x2 average pool (Huang et al., section 3, "compression" 0.5)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet121(nn.Module):
    """DenseNet-121; ``forward(x) == classifier(forward_features(x))``."""

    def __init__(self, *, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(64))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        channels = 64
        for i, layers in enumerate(BLOCKS, start=1):
            self.features.add_module(f"denseblock{i}", DenseBlock(layers, channels))
            channels += layers * GROWTH
            if i < len(BLOCKS):
                self.features.add_module(f"transition{i}", Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @property
    def head(self) -> nn.Linear:
        return self.classifier

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Global average of ``norm5``'s output after the functional ReLU, ``[N, 1024]``."""
        x = F.relu(self.features(x), inplace=True)
        return torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))

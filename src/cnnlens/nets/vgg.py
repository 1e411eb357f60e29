"""CIFAR VGG with BatchNorm (Simonyan & Zisserman, ICLR 2015, Table 1 configs
A/B/D/E; CIFAR variant as in Liu et al., "Learning Efficient Convolutional
Networks through Network Slimming", ICCV 2017).

3x3 conv + BatchNorm + ReLU stages separated by 2x2 max pooling, all in the
``features`` Sequential; a 32x32 input ends at 512x1x1, which is globally
average pooled (a no-op at 32x32, so larger inputs still work) and read by a
single ``head = Linear(512, num_classes)``. VGG-16 at 32x32 costs
313,196,544 conv MACs + 5,120 head MACs = 313.2 M (paper 000, Table 1).
"""

from __future__ import annotations

import torch
from torch import nn

from .init import kaiming_init

CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],  # fmt: skip
}


class CifarVGG(nn.Module):
    """VGG-``depth`` with BatchNorm; ``forward(x) == head(forward_features(x))``."""

    def __init__(self, depth: int, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1, bias=False), nn.BatchNorm2d(v)]
                layers.append(nn.ReLU())
                channels = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)
        kaiming_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled output of the last conv stage (after ReLU, max pool), ``[N, 512]``."""
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def factory(depth: int):
    """A ``create``-compatible constructor for VGG-``depth``."""

    def build(*, num_classes: int = 10, in_channels: int = 3) -> CifarVGG:
        return CifarVGG(depth, num_classes=num_classes, in_channels=in_channels)

    build.__name__ = f"vgg{depth}"
    build.__doc__ = f"CIFAR VGG-{depth} with BatchNorm."
    return build

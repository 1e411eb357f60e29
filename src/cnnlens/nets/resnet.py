"""CIFAR-style residual networks of depth 6n+2 (He et al., "Deep Residual
Learning for Image Recognition", CVPR 2016, section 4.2).

A 3x3 stem conv with ``16*width`` channels, three stages of ``n`` basic blocks
at ``16/32/64 * width`` channels (stride 2 at the start of stages 2 and 3),
global average pooling and a linear ``head``. Shortcut option ``"A"`` is the
parameter-free identity with stride-2 subsampling and zero-padded channels
(the paper's CIFAR choice); ``"B"`` uses a 1x1 conv + BatchNorm projection
where the shape changes and the identity elsewhere.

Multiply-accumulates at 32x32, 10 classes (``cnnlens.cost.macs``):

=========  ==========  ==========
model      shortcut A  shortcut B
=========  ==========  ==========
resnet20   40.55 M     40.81 M
resnet56   125.49 M    125.75 M
=========  ==========  ==========

Option B adds two 1x1 projections of 131,072 MACs each (0.26 M). Exact
resnet56-B count: 125,747,840 (125.75 M at two decimals, which paper 000,
Table 2 reports as 125.8 M; rounded once to one decimal it is 125.7 M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .init import kaiming_init

DEPTHS = (8, 14, 20, 32, 44, 56, 110)


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and zero-pad the new channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad={self.pad}"


class BasicBlock(nn.Module):
    """conv1-bn1-relu1-conv2-bn2, plus the shortcut, then relu2 after the add."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; ``forward(x) == head(forward_features(x))``."""

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 1,
        shortcut: str = "A",
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"ResNet depth must be 6n+2, n >= 1 (8, 14, 20, ...), got {depth}")
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ConfigError(f"width must be a positive integer multiplier, got {width!r}")
        if shortcut not in ("A", "B"):
            raise ConfigError(f"shortcut must be 'A' (zero pad) or 'B' (1x1 conv): {shortcut!r}")
        n = (depth - 2) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        channels = widths[0]
        for stage, out_channels in enumerate(widths, start=1):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 1 and i == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride, shortcut))
                channels = out_channels
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)
        kaiming_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Global average of the last block's output (after its ReLU), ``[N, 64*width]``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def factory(depth: int):
    """A ``create``-compatible constructor for ResNet-``depth``."""

    def build(
        *, num_classes: int = 10, in_channels: int = 3, width: int = 1, shortcut: str = "A"
    ) -> CifarResNet:
        return CifarResNet(
            depth, num_classes=num_classes, in_channels=in_channels, width=width, shortcut=shortcut
        )

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"CIFAR ResNet-{depth} ({(depth - 2) // 6} blocks per stage)."
    return build

"""MobileNetV2 in torchvision's layout (Sandler et al., "MobileNetV2: Inverted
Residuals and Linear Bottlenecks", CVPR 2018, Table 2, width 1.0).

``features`` is the 3x3/2 stem (32 channels), seventeen inverted-residual
blocks (1x1 expansion - 3x3 depthwise - linear 1x1 projection, each conv
followed by BatchNorm, ReLU6 after the first two; the residual is added when
stride is 1 and the width is kept) and a 1x1 conv to 1280 channels;
``classifier`` is Dropout(0.2)-Linear(1280, K). Global average pooling is
the functional ``adaptive_avg_pool2d`` in ``forward``, as in torchvision.
Every ReLU6 is its own module, ``inplace=True`` as in torchvision.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .layers import TorchvisionHead, conv_norm_act

# (expansion t, output channels c, repeats n, first stride s): the paper's Table 2
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip
ReLU6 = partial(nn.ReLU6, inplace=True)


class InvertedResidual(nn.Module):
    """``conv``: [1x1 expand-BN-ReLU6] - 3x3 depthwise-BN-ReLU6 - 1x1-BN; plus x if kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = round(in_channels * expand)
        self.stride = stride
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_norm_act(in_channels, hidden, 1, act=ReLU6))
        layers += [
            conv_norm_act(hidden, hidden, 3, stride, groups=hidden, act=ReLU6),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(TorchvisionHead, nn.Module):
    """MobileNetV2 (width 1.0); ``forward(x) == head(forward_features(x))``, ``head`` last."""

    def __init__(self, *, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_norm_act(in_channels, 32, 3, 2, act=ReLU6)]
        channels = 32
        for t, c, n, s in SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        layers.append(conv_norm_act(channels, 1280, 1, act=ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), (1, 1)), 1)

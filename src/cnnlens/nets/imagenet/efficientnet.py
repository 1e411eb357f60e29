"""EfficientNet-B0 in torchvision's layout (Tan & Le, "EfficientNet: Rethinking
Model Scaling for Convolutional Neural Networks", ICML 2019, Table 1).

``features`` is the 3x3/2 stem (32 channels, BatchNorm, SiLU), seven stages
of MBConv blocks and a 1x1 conv to 1280 channels; ``avgpool`` and
``classifier`` = Dropout(0.2)-Linear(1280, K). An MBConv block
(Sandler et al. 2018 with squeeze-excitation, Hu et al. 2018) is
``block`` = [1x1 expand + BN + SiLU] - kxk depthwise + BN + SiLU -
squeeze-excitation (SiLU inside, sigmoid gate, squeeze to a quarter of the
block's *input* channels) - 1x1 projection + BN, plus the input after
stochastic depth (Huang et al. 2016) when stride is 1 and the width is kept.
The drop probability grows linearly from 0 to 0.2 x 15/16 over the 16 blocks.
SiLU modules are ``inplace=True``, and the SE gate multiplies two tensors
that both depend on the input, as in torchvision.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .layers import SqueezeExcitation, StochasticDepth, TorchvisionHead, conv_norm_act

# (expansion, kernel, first stride, input channels, output channels, repeats): Table 1
STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
          (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
          (6, 3, 1, 192, 320, 1)]  # fmt: skip
SiLU = partial(nn.SiLU, inplace=True)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation and stochastic depth."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand: int,
        kernel: int,
        stride: int,
        drop: float,
    ) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        hidden = in_channels * expand
        layers: list[nn.Module] = []
        if hidden != in_channels:
            layers.append(conv_norm_act(in_channels, hidden, 1, act=SiLU))
        layers += [
            conv_norm_act(hidden, hidden, kernel, stride, groups=hidden, act=SiLU),
            SqueezeExcitation(hidden, max(1, in_channels // 4), act=SiLU),
            conv_norm_act(hidden, out_channels, 1),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop, "row")
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out)
            out += x
        return out


class EfficientNetB0(TorchvisionHead, nn.Module):
    """EfficientNet-B0; ``forward(x) == head(forward_features(x))``, ``head = classifier[1]``."""

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        stochastic_depth_prob: float = 0.2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_norm_act(in_channels, 32, 3, 2, act=SiLU)]
        total = sum(stage[-1] for stage in STAGES)
        index = 0
        for expand, kernel, stride, cin, cout, repeats in STAGES:
            blocks = []
            for i in range(repeats):
                drop = stochastic_depth_prob * index / total
                blocks.append(MBConv(cin if i == 0 else cout, cout, expand, kernel,
                                     stride if i == 0 else 1, drop))  # fmt: skip
                index += 1
            layers.append(nn.Sequential(*blocks))
        layers.append(conv_norm_act(STAGES[-1][4], 1280, 1, act=SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout, inplace=True), nn.Linear(1280, num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.out_features**0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)

"""ConvNeXt-T in torchvision's layout (Liu et al., "A ConvNet for the 2020s",
CVPR 2022, section 2 and Table 9: C = (96, 192, 384, 768), B = (3, 3, 9, 3)).

``features`` alternates the 4x4/4 "patchify" stem (conv + LayerNorm2d) or a
downsampling layer (LayerNorm2d + 2x2/2 conv) with a stage of ConvNeXt
blocks; ``avgpool``; ``classifier`` is LayerNorm2d-Flatten-Linear(768, K). A
block is ``block`` = 7x7 depthwise conv - permute to channels-last -
LayerNorm - Linear(C, 4C) - GELU - Linear(4C, C) - permute back, scaled per
channel by ``layer_scale`` (initialised to 1e-6, Touvron et al. 2021) and
added to the input after stochastic depth, whose probability grows linearly
from 0 to 0.1 over the 18 blocks. The pointwise layers are ``nn.Linear`` on
``[N, H, W, C]`` maps, as in torchvision.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .layers import LayerNorm2d, Permute, StochasticDepth, TorchvisionHead

DIMS = (96, 192, 384, 768)
DEPTHS = (3, 3, 9, 3)
Norm2d = partial(LayerNorm2d, eps=1e-6)


class CNBlock(nn.Module):
    """``x + drop(layer_scale * block(x))`` (Liu et al., Fig. 4, right)."""

    def __init__(self, dim: int, drop: float, layer_scale: float) -> None:
        super().__init__()
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            Permute((0, 2, 3, 1)),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute((0, 3, 1, 2)),
        )
        self.stochastic_depth = StochasticDepth(drop, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stochastic_depth(self.layer_scale * self.block(x))
        out += x
        return out


class ConvNeXtTiny(TorchvisionHead, nn.Module):
    """ConvNeXt-T; ``forward(x) == head(forward_features(x))``, ``head = classifier[2]``."""

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        stochastic_depth_prob: float = 0.1,
        layer_scale: float = 1e-6,
    ) -> None:
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(in_channels, DIMS[0], 4, 4), Norm2d(DIMS[0]))
        layers: list[nn.Module] = [stem]
        total = sum(DEPTHS)
        index = 0
        for stage, (dim, depth) in enumerate(zip(DIMS, DEPTHS)):
            blocks = []
            for _ in range(depth):
                blocks.append(
                    CNBlock(dim, stochastic_depth_prob * index / (total - 1), layer_scale)
                )
                index += 1
            layers.append(nn.Sequential(*blocks))
            if stage + 1 < len(DIMS):
                layers.append(nn.Sequential(Norm2d(dim), nn.Conv2d(dim, DIMS[stage + 1], 2, 2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            Norm2d(DIMS[-1]), nn.Flatten(1), nn.Linear(DIMS[-1], num_classes)
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(self.features(x))

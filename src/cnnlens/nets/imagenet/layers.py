"""Building blocks shared by the torchvision-layout ImageNet families.

Each block keeps the child names and order that give torchvision's
``state_dict`` keys (``features.0.0.weight`` for a conv-norm-activation
triple, ``block.1.fc1`` for squeeze-excitation, ...), so the weights files
torchvision publishes load strictly into cnnlens' own modules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    *,
    groups: int = 1,
    padding: int | None = None,
    norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
    act: Callable[[], nn.Module] | None = None,
    bias: bool | None = None,
) -> nn.Sequential:
    """``Sequential(conv, norm, act)`` (children ``0``, ``1``, ``2``; a ``None`` part is left out).

    Padding defaults to ``(k - 1) // 2`` ("same" at stride 1); the conv has a
    bias only when there is no norm after it, unless ``bias`` says otherwise.
    """
    padding = (kernel_size - 1) // 2 if padding is None else padding
    bias = norm is None if bias is None else bias
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
    ]
    if norm is not None:
        layers.append(norm(out_channels))
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class StochasticDepth(nn.Module):
    """Drop a residual branch per sample with probability ``p`` while training.

    Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016, eq. 2; the
    kept branches are scaled by ``1 / (1 - p)`` during training so evaluation
    is the identity. ``mode="row"`` draws one keep/drop per sample,
    ``"batch"`` one for the whole batch.
    """

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"stochastic depth probability must be in [0, 1], got {p}")
        if mode not in ("row", "batch"):
            raise ConfigError(f"stochastic depth mode must be 'row' or 'batch', got {mode!r}")
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1) if self.mode == "row" else (1,) * x.dim()
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep if keep > 0 else x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}"


class SqueezeExcitation(nn.Module):
    """Channel gate ``x * sigmoid(fc2(act(fc1(avgpool(x)))))`` with 1x1 convs.

    Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, eqs. 2-4.
    """

    def __init__(self, channels: int, squeeze: int, act: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = act()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return self.scale_activation(scale) * x


class Permute(nn.Module):
    """``x.permute(*dims)`` as a module (channels-last for the Linear layers of ConvNeXt)."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an ``[N, C, H, W]`` map (per position).

    Ba et al., "Layer Normalization", 2016, eq. 4, applied to the channel
    vector at every pixel as in ConvNeXt (Liu et al. 2022, section 2.6).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class TorchvisionHead:
    """``head`` and ``forward_features`` for a net whose last layer is ``classifier[-1]``.

    Mixed into nets whose classifier is a Sequential, so the part of the
    cnnlens contract that does not rename modules holds:
    ``forward(x) == head(forward_features(x))``.
    """

    classifier: nn.Sequential

    @property
    def head(self) -> nn.Linear:
        return self.classifier[-1]

    def pooled(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The ``[N, D]`` vector the last Linear reads (the classifier's earlier layers applied)."""
        x = self.pooled(x)
        for layer in list(self.classifier)[:-1]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

"""The human-predictable multi-attribute network (paper 003, Kimura & Tanaka 2020, Fig. 2).

- :class:`DilatedExtractor`: the feature extractor f_f of Table 1: four 3x3 convs with
  32 (dilation 1), 64 (d2), 64 (d3) and 128 (d2) channels, each followed by BatchNorm and
  LeakyReLU(0.01), stride 1 and paddings that keep the image size (no downsampling).
- :class:`AttributeNetwork`: K binary classifiers f_b^k on the shared features f, each
  with its own channel attention mask M^k = sigmoid(Conv3x3(f; C -> C)) in [0,1]^{C x H x W}
  (Eq. 9) and output y^k = sigmoid(w_k . GAP(g(M^k) * f) + b_k).

Table 2 lists "attention mask 128, global average pooling 128, sigmoid" and no layer from
the 128 pooled values to one binary output; we add a ``Linear(C -> 1)`` per attribute (its
weights ``heads.weight[k]``), the smallest layer that makes a binary output and the one CAM
uses. The K mask convs run as one conv ``C -> K*C`` (identical maths, one call); the
forward returns the K logits ``[N,K]`` (the sigmoid is in the loss). ``g`` is the intentional
attention-mask transformation (:mod:`.transform`), the identity unless
:meth:`AttributeNetwork.transformed` set it.

Pruned networks (:mod:`.pruning`) are the same class with fewer channels (``channels``
ends with the kept count), so they save, load and count MACs like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...errors import ConfigError
from .transform import mask_transform

# Table 1: (out channels, dilation) of each 3x3 conv.
TABLE1 = ((32, 1), (64, 2), (64, 3), (128, 2))
LEAKY_SLOPE = 0.01


class DilatedExtractor(nn.Sequential):
    """Table 1: conv-BN-LeakyReLU x 4, stride 1, padding = dilation (size kept)."""

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (32, 64, 64, 128)):
        if len(channels) != len(TABLE1):
            raise ConfigError(f"channels must give {len(TABLE1)} widths, got {list(channels)}")
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, (c_out, (_paper, dilation)) in enumerate(zip(channels, TABLE1, strict=True)):
            if int(c_out) < 1:
                raise ConfigError(f"channels[{i}] must be >= 1, got {c_out}")
            layers += [
                nn.Conv2d(c_in, int(c_out), 3, padding=dilation, dilation=dilation),
                nn.BatchNorm2d(int(c_out)),
                nn.LeakyReLU(LEAKY_SLOPE),
            ]
            c_in = int(c_out)
        super().__init__(*layers)

    @property
    def last_conv(self) -> nn.Conv2d:
        """The conv producing the features the masks and heads read (pruned channels live here)."""
        return self[-3]


class AttributeHeads(nn.Module):
    """K linear maps ``C -> 1`` on the pooled masked features: ``weight [K,C]``, ``bias [K]``."""

    def __init__(self, num_attributes: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_attributes, channels))
        self.bias = nn.Parameter(torch.zeros(num_attributes))
        bound = 1 / channels**0.5
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # [N,K,C] -> [N,K]
        return (pooled * self.weight).sum(-1) + self.bias


def _set_attributes_and_extractor(
    net: nn.Module,
    num_classes: int,
    attribute_names: Sequence[str] | None,
    in_channels: int,
    channels: Sequence[int],
) -> None:
    """What both attribute networks share: K, the attribute names (checked against K), the
    channel widths and the dilated extractor (Table 1)."""
    if attribute_names is not None and len(attribute_names) != num_classes:
        raise ConfigError(
            f"attribute_names has {len(attribute_names)} names for {num_classes} attributes"
        )
    net.num_attributes = int(num_classes)
    net.attribute_names = list(attribute_names or [str(k) for k in range(num_classes)])
    net.channels = [int(c) for c in channels]
    net.extractor = DilatedExtractor(in_channels, net.channels)


class AttributeNetwork(nn.Module):
    """Dilated extractor + K attention-masked binary classifiers (paper 003, Eq. 9)."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        channels: Sequence[int] = (32, 64, 64, 128),
        attribute_names: Sequence[str] | None = None,
    ):
        super().__init__()
        _set_attributes_and_extractor(self, num_classes, attribute_names, in_channels, channels)
        c = self.channels[-1]
        self.masks = nn.Conv2d(c, self.num_attributes * c, 3, padding=1)
        self.mask_activation = nn.Sigmoid()
        self.heads = AttributeHeads(self.num_attributes, c)
        self.transform: tuple[float, float] = (1.0, 0.0)  # (n, beta) of g; identity

    @property
    def feature_channels(self) -> int:
        return self.channels[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f_f(x): ``[N,C,H,W]``."""
        return self.extractor(x)

    def attention(self, f: torch.Tensor) -> torch.Tensor:
        """The masks M^k(f) before any transformation: ``[N,K,C,H,W]`` in [0, 1]."""
        n, c, h, w = f.shape
        return self.mask_activation(self.masks(f)).view(n, self.num_attributes, c, h, w)

    def forward_masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[N,K]`` and the untransformed masks ``[N,K,C,H,W]`` of one forward."""
        return self.classify(self.features(x))

    def classify(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[N,K]`` and masks ``[N,K,C,H,W]`` from features ``f`` (Eq. 13)."""
        masks = self.attention(f)
        n, beta = self.transform
        used = masks if (n, beta) == (1.0, 0.0) else mask_transform(masks, n, beta)
        pooled = (used * f.unsqueeze(1)).mean(dim=(-2, -1))  # GAP of g(M^k) * f: [N,K,C]
        return self.heads(pooled), masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_masks(x)[0]

    def transformed(self, n: float, beta: float) -> AttributeNetwork:
        """A copy whose forward uses g(M; n, beta) (Eq. 13); this network is unchanged."""
        import copy

        from .transform import check_parameters

        check_parameters(n, beta)
        other = copy.deepcopy(self)
        other.transform = (float(n), float(beta))
        return other


def build(
    *,
    num_classes: int,
    in_channels: int = 3,
    channels: Sequence[int] = (32, 64, 64, 128),
    attribute_names: Sequence[str] | None = None,
) -> AttributeNetwork:
    """Constructor registered in :mod:`cnnlens.nets` as ``"attribute-net"``."""
    return AttributeNetwork(
        num_classes=num_classes,
        in_channels=in_channels,
        channels=list(channels),
        attribute_names=None if attribute_names is None else list(attribute_names),
    )


class PlainAttributeCNN(nn.Module):
    """The baseline of the predictability score: the same extractor, global average pooling
    and one ``Linear(C -> K)`` (``head``), no attention: logits = W GAP(f) + b."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        channels: Sequence[int] = (32, 64, 64, 128),
        attribute_names: Sequence[str] | None = None,
    ):
        super().__init__()
        _set_attributes_and_extractor(self, num_classes, attribute_names, in_channels, channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.channels[-1], self.num_attributes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

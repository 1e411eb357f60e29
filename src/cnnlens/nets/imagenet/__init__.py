"""ImageNet families whose ``state_dict`` keys and shapes are torchvision's.

``cnnlens.nets.create("resnet50")`` builds an untrained ResNet-50 with 1000
classes whose weights file from torchvision loads strictly
(``load_state_dict(strict=True)``, or :func:`cnnlens.checkpoint.load_state_dict_file`)
without torchvision installed. The modules are written for cnnlens; only
the module names, the order of the layers and the activation constructs
follow torchvision (reused in-place ReLUs, functional ReLU in DenseNet, SiLU
and squeeze-excitation in EfficientNet, GELU and LayerNorm in ConvNeXt),
because those are what users' models look like. Each has ``head`` (the last
``nn.Linear``) and ``forward_features`` with
``forward(x) == head(forward_features(x))``, but not the rest of the
contract of :mod:`cnnlens.nets` (module names differ, activations are reused
or in place). Adaptive pooling lets inputs from 32 px up work.

Parameters at 1000 classes and MACs at 224 px (``cnnlens.macs``: conv and
linear layers) equal torchvision's published figures (its weights'
metadata, GFLOPS that are in fact MACs, counted the same way):

===============  ===========  ===============  =========
name             parameters   MACs             published
===============  ===========  ===============  =========
resnet18         11,689,512   1,814,073,344    1.814 G
resnet50         25,557,032   4,089,184,256    4.089 G
vgg16_bn         138,365,992  15,470,264,320   15.47 G
mobilenet_v2     3,504,872    300,774,272      0.301 G
efficientnet_b0  5,288,548    385,814,752      0.386 G
densenet121      7,978,856    2,834,161,664    2.834 G
convnext_tiny    28,589,128   4,455,531,264    4.456 G
===============  ===========  ===============  =========
"""

from __future__ import annotations

from torch import nn

from .convnext import ConvNeXtTiny
from .densenet import DenseNet121
from .efficientnet import EfficientNetB0
from .mobilenet import MobileNetV2
from .resnet import ResNet
from .vgg import VGG


def resnet18(*, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """ImageNet ResNet-18."""
    return ResNet(18, num_classes=num_classes, in_channels=in_channels)


def resnet50(*, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """ImageNet ResNet-50 (v1.5: stride on the 3x3 conv)."""
    return ResNet(50, num_classes=num_classes, in_channels=in_channels)


def vgg16_bn(*, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """ImageNet VGG-16 with BatchNorm."""
    return VGG(num_classes=num_classes, in_channels=in_channels)


def mobilenet_v2(*, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """MobileNetV2, width 1.0."""
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels)


def efficientnet_b0(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    stochastic_depth_prob: float = 0.2,
    dropout: float = 0.2,
) -> nn.Module:
    """EfficientNet-B0."""
    return EfficientNetB0(
        num_classes=num_classes,
        in_channels=in_channels,
        stochastic_depth_prob=stochastic_depth_prob,
        dropout=dropout,
    )


def densenet121(*, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """DenseNet-121 (k = 32)."""
    return DenseNet121(num_classes=num_classes, in_channels=in_channels)


def convnext_tiny(
    *, num_classes: int = 1000, in_channels: int = 3, stochastic_depth_prob: float = 0.1
) -> nn.Module:
    """ConvNeXt-T."""
    return ConvNeXtTiny(
        num_classes=num_classes,
        in_channels=in_channels,
        stochastic_depth_prob=stochastic_depth_prob,
    )


FAMILIES = {
    "resnet18": (resnet18, "ImageNet ResNet-18, torchvision layout (11.7 M parameters)"),
    "resnet50": (resnet50, "ImageNet ResNet-50 v1.5, torchvision layout (25.6 M parameters)"),
    "vgg16_bn": (vgg16_bn, "ImageNet VGG-16 with BatchNorm, torchvision layout (138 M parameters)"),
    "mobilenet_v2": (mobilenet_v2, "ImageNet MobileNetV2, torchvision layout (3.5 M parameters)"),
    "efficientnet_b0": (
        efficientnet_b0,
        "ImageNet EfficientNet-B0, torchvision layout (5.3 M parameters)",
    ),
    "densenet121": (densenet121, "ImageNet DenseNet-121, torchvision layout (8.0 M parameters)"),
    "convnext_tiny": (convnext_tiny, "ImageNet ConvNeXt-T, torchvision layout (28.6 M parameters)"),
}
"""name -> (constructor, one-line description) for :mod:`cnnlens.nets` to register."""

__all__ = list(FAMILIES)

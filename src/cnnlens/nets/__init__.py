"""Architectures cnnlens trains and analyses itself, built by name.

``create("resnet20", num_classes=10)`` builds a model; ``names()`` lists what
is available; ``@register("mynet", "one line")`` adds a constructor. Built in:
CIFAR ResNet-8/14/20/32/44/56/110 (``width``, ``shortcut="A"|"B"``), CIFAR
VGG-11/13/16/19 with BatchNorm, LeNet-5 (re-label distillation's VAE,
``conv-vae``, a ``kind="generator"``, registers itself from
:mod:`cnnlens.studies.relabel.vae`). ImageNet families with
torchvision's module names and ``state_dict`` layout, so torchvision's
weights files load strictly (:mod:`cnnlens.nets.imagenet`): ``resnet18``,
``resnet50``, ``vgg16_bn``, ``mobilenet_v2``, ``efficientnet_b0``,
``densenet121``, ``convnext_tiny`` (``num_classes`` defaults to 1000 there).

Every model of ``layout="cnnlens"`` (all but the ImageNet families, whose
layout is ``"torchvision"``: torchvision's module names and activations,
with ``head`` and ``forward_features`` but reused / in-place activations)
follows one contract, which methods rely on:

- the final layer is an ``nn.Linear`` attribute named ``head``;
- ``forward_features(x)`` returns the ``[N, D]`` vector the head reads (the
  pooled output of the last block, after its ReLU, so entries are >= 0) and
  ``forward(x) == head(forward_features(x))``;
- **every activation is its own, non-in-place module instance**: one
  ``nn.ReLU()`` per place it is applied (the residual add has its own), never
  a module reused twice in a forward, never ``inplace=True``, never
  ``F.relu`` / ``torch.relu`` inside a block. Hook-based methods (Guided
  Backprop, Deconvnet, DeepLIFT, LRP, activation capture) attach to
  activation *modules*; a reused module gets one rule for several places and
  an in-place one overwrites the tensor a hook captured.
  :func:`cnnlens.nets.checks.require_distinct_activations` checks this for
  any model, including a user's;
- ``model.arch = {"name": ..., "kwargs": {...}}`` records how to rebuild it
  (``cnnlens.checkpoint`` saves and loads through it).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ConfigError
from . import imagenet, lenet, resnet, vgg

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], str]] = {}
_KINDS: dict[str, str] = {}
_LAYOUTS: dict[str, str] = {}
KINDS = ("classifier", "generator")
LAYOUTS = ("cnnlens", "torchvision")


def register(
    name: str, description: str, *, kind: str = "classifier", layout: str = "cnnlens"
) -> Callable[[Callable[..., nn.Module]], Callable]:
    """Decorator adding a constructor ``fn(*, num_classes, in_channels, **kw) -> nn.Module``.

    The constructor must accept ``num_classes`` and ``in_channels`` keywords; a
    ``kind="classifier"`` net of ``layout="cnnlens"`` keeps the contract of
    this module (``head``, ``forward_features``, distinct activations), a
    ``"generator"`` (the VAE) does not; ``layout="torchvision"`` marks a net
    that keeps torchvision's module names and activation constructs instead.
    """
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {KINDS}, got {kind!r}")
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY and _REGISTRY[name][0] is not fn:
            raise ConfigError(f"architecture {name!r} is already registered")
        params = inspect.signature(fn).parameters
        for required in ("num_classes", "in_channels"):
            if required not in params:
                raise ConfigError(f"constructor for {name!r} must accept {required!r}")
        _REGISTRY[name] = (fn, description)
        _KINDS[name] = kind
        _LAYOUTS[name] = layout
        return fn

    return add


def names(kind: str | None = None, layout: str | None = None) -> dict[str, str]:
    """Every registered name (of ``kind`` / ``layout``, if given) with its description."""
    return {
        n: d
        for n, (_fn, d) in _REGISTRY.items()
        if (kind is None or _KINDS[n] == kind) and (layout is None or _LAYOUTS[n] == layout)
    }


def kind_of(name: str) -> str:
    """``"classifier"`` or ``"generator"`` for a registered architecture name."""
    return _KINDS.get(name, "classifier")


def layout_of(name: str) -> str:
    """``"cnnlens"`` (the contract above) or ``"torchvision"`` for a registered name."""
    return _LAYOUTS.get(name, "cnnlens")


def create(
    name: str, num_classes: int | None = None, in_channels: int | None = None, **kwargs: Any
) -> nn.Module:
    """Build architecture ``name``; records ``model.arch`` (name + all arguments).

    ``num_classes`` / ``in_channels`` left out take the constructor's default
    (10 and 3 for the CIFAR nets, 1000 and 3 for the ImageNet families).
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(
            f"unknown architecture {name!r}{hint} (available: {', '.join(_REGISTRY)})"
        )
    fn = _REGISTRY[name][0]
    sig = inspect.signature(fn)
    given = {}
    for label, value, fallback in (
        ("num_classes", num_classes, 10),
        ("in_channels", in_channels, 3),
    ):
        if value is None:
            if sig.parameters[label].default is not inspect.Parameter.empty:
                continue  # the constructor's own default
            value = fallback
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{label} must be a positive integer, got {value!r}")
        given[label] = value
    try:
        bound = sig.bind(**given, **kwargs)
    except TypeError as exc:
        accepted = ", ".join(p for p in sig.parameters)
        raise ConfigError(f"bad arguments for {name!r}: {exc} (accepted: {accepted})") from None
    bound.apply_defaults()
    model = fn(*bound.args, **bound.kwargs)
    model.arch = {"name": name, "kwargs": dict(bound.arguments)}
    return model


for _depth in resnet.DEPTHS:
    register(
        f"resnet{_depth}",
        f"CIFAR ResNet-{_depth} (3 stages x {(_depth - 2) // 6} basic blocks, 16/32/64 x width)",
    )(resnet.factory(_depth))
for _depth in sorted(vgg.CONFIGS):
    register(f"vgg{_depth}", f"CIFAR VGG-{_depth} with BatchNorm and a single Linear(512, K) head")(
        vgg.factory(_depth)
    )
register("lenet5", "LeNet-5 for 32x32 inputs (1 or 3 channels), ReLU and max pooling")(lenet.build)
for _name, (_build, _description) in imagenet.FAMILIES.items():
    register(_name, _description, layout="torchvision")(_build)

__all__ = ["create", "kind_of", "layout_of", "names", "register"]

"""Build a model from a spec that is not a saved cnnlens folder.

- ``package.module:callable``: the user's own code, imported as they would import it
  (:func:`importlib.import_module` on the current ``sys.path`` plus the current
  directory); ``callable()`` must return an ``nn.Module``;
- ``torchvision:NAME`` (``torchvision.models.get_model(NAME)``, no download) and
  ``timm:NAME`` (``timm.create_model(NAME)``), when those packages import;
- ``NAME`` of a :mod:`cnnlens.nets` architecture (e.g. ``resnet50``, torchvision's
  ``state_dict`` layout, so a torchvision weights file loads into it).

Each returns an untrained module; :func:`cnnlens.load` fills it with the weights.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

from torch import nn

from ..errors import ConfigError, InputError, first_line

CALLABLE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
ZOOS = ("torchvision", "timm")


def is_callable_spec(spec: str) -> bool:
    """``package.module:callable`` (also ``module:Class.method``)."""
    return bool(CALLABLE.match(spec)) and spec.partition(":")[0] not in ZOOS


def _import(name: str, spec: str):
    here = os.getcwd()
    added = here not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or name
        raise InputError(
            f"{spec}: no module named {missing!r}; is the package importable from here "
            f"(installed, or its folder the current directory or on PYTHONPATH)?"
        ) from None
    except (ImportError, SyntaxError) as exc:
        raise InputError(f"{spec}: importing {name!r} failed: {first_line(exc)}") from None
    finally:
        if added:
            sys.path.remove(here)


def from_callable(spec: str) -> nn.Module:
    """``package.module:callable()``; an InputError naming a missing module or attribute."""
    module_name, _, attr = spec.partition(":")
    obj: Any = _import(module_name, spec)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"{spec}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"{spec}: {attr!r} is a {type(obj).__name__}, not a callable")
    try:
        model = obj()
    except TypeError as exc:
        raise InputError(f"{spec}() must build the model without arguments: {exc}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"{spec}() returned a {type(model).__name__}, not a torch nn.Module")
    return model


def from_zoo(spec: str) -> tuple[nn.Module, dict[str, Any]]:
    """``torchvision:NAME`` / ``timm:NAME`` and the card fields the package knows."""
    zoo, _, name = spec.partition(":")
    try:
        package = importlib.import_module(zoo)
    except ImportError as exc:
        raise InputError(
            f"{spec}: {zoo} does not import here ({first_line(exc) or type(exc).__name__}); "
            f"install it, or use a cnnlens.nets name with weights= (e.g. resnet50)"
        ) from None
    try:
        if zoo == "torchvision":
            model = package.models.get_model(name, weights=None)
            return model, {"input_shape": (3, 224, 224)}
        model = package.create_model(name, pretrained=False)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise InputError(f"{spec}: {zoo} has no model {name!r} ({first_line(exc)})") from None
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return model, {k: cfg[k] for k in ("mean", "std") if cfg.get(k)} | (
        {"input_shape": tuple(cfg["input_size"])} if cfg.get("input_size") else {}
    )


def from_nets(name: str, num_classes: int | None) -> tuple[nn.Module, dict[str, Any]]:
    """A :mod:`cnnlens.nets` architecture; ImageNet families take 3x224x224 input."""
    from .. import nets

    try:
        model = nets.create(name, num_classes=num_classes)
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    torchvision_layout = nets.layout_of(name) == "torchvision"
    return model, {"input_shape": (3, 224, 224)} if torchvision_layout else {}

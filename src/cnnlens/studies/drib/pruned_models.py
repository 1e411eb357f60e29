"""Save and load structurally pruned models without pickle.

A pruned network has non-standard widths, so its architecture name and
arguments (``model.arch``) no longer rebuild it. :func:`save_pruned` writes the
usual ``model.safetensors`` + ``model.json`` (:mod:`cnnlens.checkpoint`) and
records in ``extra["pruned"]`` the shape of every conv, linear and BatchNorm
layer; :func:`load_pruned` builds the unpruned architecture (or takes the
user's model), shrinks those layers to the recorded shapes and loads the
weights strictly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ... import checkpoint
from ...errors import CheckpointError
from ...layers import set_layer

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def layer_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Per layer name, the sizes that define it: a conv's ``in``, ``out`` and ``groups``,
    a linear layer's ``in`` and ``out``, a BatchNorm's ``features``."""
    shapes: dict[str, dict[str, int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, _CONV):
            shapes[name] = {"in": m.in_channels, "out": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.Linear):
            shapes[name] = {"in": m.in_features, "out": m.out_features}
        elif isinstance(m, _NORM):
            shapes[name] = {"features": m.num_features}
    return shapes


def _resized(m: nn.Module, size: Mapping[str, int]) -> nn.Module:
    """A fresh module like ``m`` with the given sizes (weights are loaded afterwards)."""
    if isinstance(m, _CONV):
        return type(m)(
            size["in"],
            size["out"],
            m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            groups=size["groups"],
            bias=m.bias is not None,
            padding_mode=m.padding_mode,
        )
    if isinstance(m, nn.Linear):
        return nn.Linear(size["in"], size["out"], bias=m.bias is not None)
    return type(m)(
        size["features"],
        eps=m.eps,
        momentum=m.momentum,
        affine=m.affine,
        track_running_stats=m.track_running_stats,
    )


def shrink(model: nn.Module, shapes: Mapping[str, Mapping[str, int]]) -> nn.Module:
    """Resize the layers of ``model`` (in place) to ``shapes`` from :func:`layer_shapes`."""
    modules = dict(model.named_modules())
    for name, size in shapes.items():
        m = modules.get(name)
        if m is None or not isinstance(m, (*_CONV, nn.Linear, *_NORM)):
            raise CheckpointError(f"pruned layer {name!r} is not a conv, linear or norm layer here")
        try:
            device = next(m.parameters(), torch.empty(0)).device
            set_layer(model, name, _resized(m, size).to(device))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"cannot resize {name!r} to {dict(size)}: {exc}") from None
    return model


def save_pruned(
    model: nn.Module, dir: str | os.PathLike, *, extra: Mapping[str, Any] | None = None, **meta
) -> Path:
    """:func:`cnnlens.checkpoint.save` with the layer shapes in ``extra["pruned"]``."""
    info = dict(extra or {})
    info["pruned"] = {"shapes": layer_shapes(model), **dict(info.get("pruned") or {})}
    return checkpoint.save(model, dir, extra=info, **meta)


def load_pruned(
    dir: str | os.PathLike, *, model: nn.Module | None = None, device: str | None = None
) -> nn.Module:
    """Load a model saved by :func:`save_pruned`; ``model`` is the unpruned user model
    to shrink when the saved one is not a :mod:`cnnlens.nets` architecture."""
    dir = Path(dir)
    meta = checkpoint.read_meta(dir)
    pruned = (meta.get("extra") or {}).get("pruned")
    if not isinstance(pruned, dict) or not isinstance(pruned.get("shapes"), dict):
        raise CheckpointError(f"{dir} holds no pruned model (no extra.pruned.shapes in model.json)")
    base = model if model is not None else checkpoint.rebuild(meta, dir / checkpoint.META_FILE)
    shrink(base, pruned["shapes"])
    return checkpoint.load(dir, model=base, device=device)

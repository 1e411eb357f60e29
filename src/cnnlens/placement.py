"""Where a model's tensors live: the device (and floating dtype) its inputs must go to.

One helper for every place that moves images to a model: the device of its first
parameter (of its first buffer for a parameter-free model; the CPU for neither)."""

from __future__ import annotations

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter, else of its first buffer, else the CPU."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype images go to: those of ``model``'s first parameter
    (float32 when it has none or its first parameter is not floating point)."""
    param = next(model.parameters(), None)
    if param is None or not param.is_floating_point():
        return model_device(model), torch.float32
    return param.device, param.dtype

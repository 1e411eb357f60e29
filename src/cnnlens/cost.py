"""Multiply-accumulate (MAC) counts of a model, measured by one forward.

Paper 000 (section 4.1) counts a convolution as
``MACs = C_in x K x K x H_out x W_out x C_out``; here ``C_in`` is divided by
the groups (depthwise / grouped convs), and a linear layer costs
``in x out`` per row. Forward hooks on every ``Conv*d``, ``ConvTranspose*d``
and ``nn.Linear`` record the real output shapes, so any user model works,
and a module that runs twice is counted twice. Batch norm, activations,
pooling and additions are not counted (the usual convention). Counts are
per input image.

Reference values at 32x32 with 10 classes: CIFAR VGG-16 313.2 M (paper
000, Table 1: 313,196,544 conv + 5,120 head); ResNet-20 40.55 M with
shortcut A and 40.81 M with B; ResNet-56 125.49 M with A and 125.75 M with B
(exactly 125,747,840; paper 000, Table 2 gives 125.8 M, i.e. 125.75 rounded
half up). Option B adds two 1x1 projections of 131,072 MACs each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import InputError
from .hooks import HookSet

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass
class MacReport:
    """MACs per layer (``layers``: name -> MACs, in order of first call) and their ``total``."""

    layers: dict[str, int]
    kinds: dict[str, str] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.layers.values())

    @property
    def total_m(self) -> float:
        """Total in millions of MACs."""
        return self.total / 1e6

    def table(self) -> str:
        """A markdown table: layer, type, calls, MACs (M) and share of the total."""
        total = self.total or 1
        rows = ["| layer | type | calls | MACs (M) | share (%) |", "|---|---|---:|---:|---:|"]
        for name, value in self.layers.items():
            rows.append(
                f"| {name} | {self.kinds.get(name, '')} | {self.calls.get(name, 1)} "
                f"| {value / 1e6:.3f} | {100 * value / total:.1f} |"
            )
        rows.append(f"| **total** | | | **{self.total_m:.3f}** | 100.0 |")
        return "\n".join(rows) + "\n"


def _layer_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """MACs of one call for one image (the first dimension is the batch)."""
    if isinstance(module, _CONV):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return per_output * out[0].numel()
    if isinstance(module, _CONV_T):
        per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
        return per_input * inp[0].numel()
    return module.in_features * out[0].numel()  # nn.Linear: in x out per row


def macs(model: nn.Module, input_size: Sequence[int] | torch.Tensor = (3, 32, 32)) -> MacReport:
    """Count the multiply-accumulates of one forward of ``model`` per image.

    ``input_size`` is the shape of one image ``(C, H, W)`` (a zero image is
    run) or an example batch tensor. The model runs once in eval mode without
    gradients; its mode is restored and every hook removed, also on error.
    """
    if isinstance(input_size, torch.Tensor):
        x = input_size
        if x.dim() < 2:
            raise InputError(f"example input must have a batch dimension, got {tuple(x.shape)}")
    else:
        size = tuple(input_size)
        if not size or not all(isinstance(s, int) and s > 0 for s in size):
            raise InputError(f"input_size must be positive ints like (3, 32, 32), got {size!r}")
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        x = torch.zeros(1, *size, device=device, dtype=dtype)

    layers: dict[str, int] = {}
    kinds: dict[str, str] = {}
    calls: dict[str, int] = {}

    def count(name: str):
        def hook(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            layers[name] = layers.get(name, 0) + _layer_macs(module, inputs[0], out)
            kinds[name] = type(module).__name__
            calls[name] = calls.get(name, 0) + 1

        return hook

    was_training = model.training
    with HookSet() as hooks:
        for name, module in model.named_modules():
            if isinstance(module, (*_CONV, *_CONV_T, nn.Linear)):
                hooks.forward(module, count(name or type(module).__name__))
        model.eval()
        try:
            with torch.no_grad():
                model(x)
        finally:
            model.train(was_training)
    return MacReport(layers=layers, kinds=kinds, calls=calls)

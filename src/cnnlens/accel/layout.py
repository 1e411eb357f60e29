"""Channels-last memory for a model copy, and the check that a copy computes what
the model does.

oneDNN convolves in a channels-last (blocked) layout, so on the CPU the default
layout pays a reorder before and after every convolution. Measured on the 2-core
AMD EPYC the project ran on before (batch 32; ResNet-50-like at 224 px, batch 4):
per-image forward time fell 1.30x on ResNet-20, 1.15x on VGG-11 (1 and 2
threads), 1.27x on LeNet-5 and 1.06x on the ResNet-50. Channels-last inputs to
the default-layout model are not enough: VGG-11 then ran 8-15 % slower,
reordering its weights on every call. Forward+backward through the copy
(gradient to the input, batch 16; 64 for LeNet-5): 1.14x / 1.21x faster on
ResNet-20 (1 / 2 threads), 1.05x / 1.00x on VGG-11, 1.83x on LeNet-5, 1.16x on
the ResNet-50 at batch 4.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastCopy:
    """A copy of a model to run in its place: ``module`` takes inputs in ``layout``."""

    module: nn.Module
    layout: torch.memory_format


def same_outputs(got: object, expected: torch.Tensor) -> bool:
    """True if ``got`` is ``expected`` up to float rounding of a reordered computation."""
    return (
        isinstance(got, torch.Tensor)
        and got.shape == expected.shape
        and torch.allclose(
            got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max().clamp_min(1))
        )
    )


def channels_last_if_same(copy: nn.Module, probe: torch.Tensor, expected: torch.Tensor) -> bool:
    """Put ``copy`` (a model copy of cnnlens' own) in channels-last memory if it is on
    the CPU and still gives ``expected`` on ``probe``; otherwise leave it as it was
    (and say why in a debug line of the ``cnnlens.accel`` logger). True if converted."""
    if probe.device.type != "cpu" or probe.dim() != 4:
        return False
    copy.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            same = same_outputs(copy(probe.contiguous(memory_format=torch.channels_last)), expected)
        why = "its outputs differ"
    except RuntimeError as exc:  # e.g. a .view() of a channels-last feature map
        same, why = False, f"{type(exc).__name__}: {exc}"
    if not same:
        log.debug("%s copy stays in the default layout (channels-last: %s)", _name(copy), why)
        copy.to(memory_format=torch.contiguous_format)
    return same


def _name(model: nn.Module) -> str:
    return type(model).__name__

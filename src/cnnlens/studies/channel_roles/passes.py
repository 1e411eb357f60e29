"""One chunked, frozen pass of an attribute network over a data set.

Everything the readings need comes from a single forward per image: the logits ``[N,K]``,
the spatial means of the K attention masks ``[N,K,C]`` (Fig. 5 averages these) and the
global-average-pooled features ``[N,C]`` (Fig. 6 correlates these). Chunks go through the
one batching helper; the model's mode and flags are restored (:func:`cnnlens.hooks.frozen`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...chunking import run_chunked
from ...data.base import ImageDataset
from ...hooks import frozen
from ...placement import model_device
from .objective import require_attribute_network

CHUNK = 64


@dataclass
class AttributePass:
    """Per image: ``logits [N,K]``, ``mask_means [N,K,C]``, ``pooled [N,C]`` (CPU, float32)."""

    logits: torch.Tensor
    mask_means: torch.Tensor
    pooled: torch.Tensor
    targets: torch.Tensor  # [N,K] bool


def subset_indices(data: ImageDataset, n: int | None) -> torch.Tensor:
    """The first ``n`` indices (all when ``n`` is None or larger than the data set)."""
    return torch.arange(len(data) if n is None else min(int(n), len(data)))


@torch.no_grad()
def run_pass(
    model: nn.Module, data: ImageDataset, *, n: int | None = None, chunk: int = CHUNK
) -> AttributePass:
    """Run ``model`` once over the first ``n`` images of ``data`` (see the module docstring)."""
    require_attribute_network(model)
    idx = subset_indices(data, n)
    device = model_device(model)

    def part(start: int, stop: int):
        x, _ = data.tensors(idx[start:stop])
        x = x.to(device)
        f = model.features(x)
        logits, masks = model.classify(f)
        return logits.cpu(), masks.mean(dim=(-2, -1)).cpu(), f.mean(dim=(-2, -1)).cpu()

    with frozen(model):
        logits, mask_means, pooled = run_chunked(part, len(idx), chunk)
    return AttributePass(logits, mask_means, pooled, data.attributes[idx].bool())


def accuracy_per_attribute(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Share of images whose decision (logit > 0) matches the attribute: ``[K]`` float64."""
    return ((logits > 0) == targets.bool()).double().mean(0)

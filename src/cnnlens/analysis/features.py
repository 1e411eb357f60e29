"""Penultimate features and logits of a classifier over a whole data set.

Paper 002 (section 4) works on the vector the final linear layer reads (for
a CIFAR ResNet: the global-average-pooled output of the last block, after
its ReLU). This module collects it for every image of a data set in batches
through :mod:`cnnlens.chunking`, for any classifier whose final linear layer
:func:`cnnlens.layers.final_linear` can locate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..chunking import chunk_size, run_chunked
from ..data.adapt import as_dataset
from ..data.base import ImageDataset
from ..errors import InputError, LayerError
from ..hooks import frozen
from ..layers import final_linear, penultimate_features
from ..placement import model_device


@dataclass
class Features:
    """Head input ``features`` ``[N,m]``, model ``logits`` ``[N,K]`` and ``labels`` ``[N]``."""

    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    head_name: str

    @property
    def predicted(self) -> torch.Tensor:
        return self.logits.argmax(1)


def locate_head(model: nn.Module, probe: torch.Tensor) -> tuple[str, nn.Linear]:
    """Name and module of the final linear layer, checked against the feature width."""
    try:
        with frozen(model), torch.no_grad():
            model(probe[:1])
    except RuntimeError as exc:
        raise InputError(
            f"{type(model).__name__} cannot run on images of shape {tuple(probe.shape[1:])} "
            f"(is it the model for this data set?): {str(exc).splitlines()[0]}"
        ) from None
    name, head = final_linear(model, probe)
    with frozen(model), torch.no_grad():
        feats = penultimate_features(model, probe[:1], head=name)
    if feats.shape[1] != head.in_features:
        raise LayerError(
            f"the penultimate features of {type(model).__name__} have {feats.shape[1]} values "
            f"but its final layer {name!r} reads {head.in_features}"
        )
    return name, head


def collect_features(
    model: nn.Module,
    data: ImageDataset,
    *,
    indices: torch.Tensor | None = None,
    batch_size: int | None = None,
    desc: str | None = None,
) -> Features:
    """Penultimate features and logits of ``model`` for ``data`` (or its ``indices``).

    ``data`` is anything :func:`~cnnlens.data.as_dataset` accepts.

    Runs in eval mode without gradients; the model's state is left as found.
    The logits are the head applied to the captured features, which
    :func:`~cnnlens.layers.final_linear` guarantees equal the model's output.
    """
    data = as_dataset(data)
    idx = torch.arange(len(data)) if indices is None else torch.as_tensor(indices).long()
    if idx.numel() == 0:
        raise InputError(f"no images to compute features on in {data.name}")
    device = model_device(model)
    probe, _ = data.tensors(idx[:1])
    probe = probe.to(device)
    with frozen(model):
        name, head = locate_head(model, probe)
        size = chunk_size(model, probe, backward=False, batch_size=batch_size)

        def run(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            x, _ = data.tensors(idx[start:stop])
            with torch.no_grad():
                feats = penultimate_features(model, x.to(device), head=name)
                return feats, head(feats)

        feats, logits = run_chunked(run, int(idx.numel()), size, desc=desc)
    return Features(feats, logits, data.labels[idx].to(device), name)

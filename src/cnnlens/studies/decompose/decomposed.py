"""The decomposed final layer: each class reads only its influential features.

Paper 002 (sections 5.2.3-5.2.4, "decomposed softmax"): the final layer
``logit_y = W_y . x + b_y`` is replaced by
``logit_y = sum_{j in I_y} W'_{y,j} x_j + b_y`` with ``W'`` initialised from
``W[y, I_y]``; its cost drops from ``m x K`` to ``k2 x K`` multiply-adds.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ... import checkpoint
from ...errors import CheckpointError, InputError, LayerError
from ...layers import final_linear, get_layer, set_layer
from .influential import InfluentialFeatures


class DecomposedHead(nn.Module):
    """A final layer where class ``y`` sees only the features ``indices[y]``.

    ``indices`` ``[K,k]`` (a buffer), ``weight`` ``[K,k]`` and ``bias`` ``[K]``
    (trainable parameters). Input ``[N,m]`` (or anything flattening to it),
    output logits ``[N,K]``.
    """

    def __init__(
        self,
        indices: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        in_features: int | None = None,
    ) -> None:
        super().__init__()
        if indices.dim() != 2 or weight.shape != indices.shape:
            raise InputError(
                f"indices and weight must both be [K,k]; got {tuple(indices.shape)} and "
                f"{tuple(weight.shape)}"
            )
        if bias is not None and bias.shape != indices.shape[:1]:
            raise InputError(f"bias must be [K={indices.shape[0]}], got {tuple(bias.shape)}")
        self.in_features = int(in_features if in_features is not None else int(indices.max()) + 1)
        if int(indices.min()) < 0 or int(indices.max()) >= self.in_features:
            raise InputError(f"indices must lie in [0, {self.in_features})")
        self.register_buffer("indices", indices.detach().clone().long())
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, indices: torch.Tensor) -> DecomposedHead:
        """Initialise from a trained ``nn.Linear``: ``W' = W[y, I_y]``, same bias."""
        if not isinstance(linear, nn.Linear):
            raise LayerError(f"the final layer must be nn.Linear, got {type(linear).__name__}")
        if indices.shape[0] != linear.out_features:
            raise InputError(
                f"need one index row per class: the layer has {linear.out_features} outputs, "
                f"indices has {indices.shape[0]} rows"
            )
        indices = indices.to(linear.weight.device).long()
        weight = linear.weight.detach().gather(1, indices)
        bias = linear.bias.detach() if linear.bias is not None else None
        return cls(indices, weight, bias, in_features=linear.in_features)

    @property
    def num_classes(self) -> int:
        return int(self.indices.shape[0])

    @property
    def macs(self) -> int:
        """Multiply-adds per image: ``K x k`` (a full linear layer costs ``K x m``)."""
        return int(self.indices.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        picked = x[:, self.indices]  # [N, K, k]
        logits = (picked * self.weight).sum(-1)
        return logits + self.bias if self.bias is not None else logits

    def extra_repr(self) -> str:
        k = self.indices.shape[1]
        return f"in_features={self.in_features}, classes={self.num_classes}, k={k}"


def decompose(model: nn.Module, influential: InfluentialFeatures) -> nn.Module:
    """A copy of ``model`` whose final linear layer is a :class:`DecomposedHead`.

    The user's model is left untouched (the copy is a deep copy); the new
    head sits where the old one was (``influential.head_name_``, or the layer
    :func:`~cnnlens.layers.final_linear` finds), so the copy is a full classifier.
    """
    influential._check_fitted()
    name = getattr(influential, "head_name_", None)
    if name is None:
        name, _ = final_linear(model)
    linear = get_layer(model, name)
    if not isinstance(linear, nn.Linear):
        raise LayerError(
            f"layer {name!r} of {type(model).__name__} is {type(linear).__name__}, "
            "not the nn.Linear final layer the influential features were fitted on"
        )
    if linear.in_features != influential.n_features_in_:
        raise InputError(
            f"influential features were fitted on {influential.n_features_in_} features but "
            f"{name!r} reads {linear.in_features}"
        )
    copied = copy.deepcopy(model)
    head = DecomposedHead.from_linear(get_layer(copied, name), influential.indices_)
    head.train(linear.training)
    set_layer(copied, name, head)
    return copied


def head_macs(model: nn.Module, name: str) -> int:
    """Multiply-adds per image of the final layer ``name`` (linear or decomposed)."""
    layer = get_layer(model, name)
    if isinstance(layer, DecomposedHead):
        return layer.macs
    if isinstance(layer, nn.Linear):
        return int(layer.in_features * layer.out_features)
    raise LayerError(f"layer {name!r} is {type(layer).__name__}, not a final layer")


def save_decomposed(
    model: nn.Module,
    dir: str | os.PathLike,
    head: str,
    *,
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
    input_shape: Sequence[int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save a decomposed classifier (:func:`decompose`) so :func:`load_decomposed` and
    ``cnnlens.load`` can rebuild it: the JSON records the head's
    name and shape next to the base architecture."""
    layer = get_layer(model, head)
    if not isinstance(layer, DecomposedHead):
        raise LayerError(f"layer {head!r} is {type(layer).__name__}, not a DecomposedHead")
    shape = {
        "head": head,
        "classes": layer.num_classes,
        "k": int(layer.indices.shape[1]),
        "in_features": layer.in_features,
        "bias": layer.bias is not None,
    }
    info = {**dict(extra or {}), "decomposed": shape}
    return checkpoint.save(
        model, dir, classes=classes, mean=mean, std=std, input_shape=input_shape, extra=info
    )


def load_decomposed(dir: str | os.PathLike, *, device: str | None = None) -> nn.Module:
    """Rebuild a classifier saved by :func:`save_decomposed` and load its weights."""
    meta = checkpoint.read_meta(dir)
    shape = (meta.get("extra") or {}).get("decomposed")
    if not isinstance(shape, dict):
        raise CheckpointError(f"{dir} holds no decomposed model (no 'decomposed' entry in extra)")
    try:
        k, n_classes = int(shape["k"]), int(shape["classes"])
        head = DecomposedHead(
            torch.zeros(n_classes, k, dtype=torch.long),
            torch.zeros(n_classes, k),
            torch.zeros(n_classes) if shape.get("bias", True) else None,
            in_features=int(shape["in_features"]),
        )
        name = str(shape["head"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{dir}: malformed 'decomposed' entry {shape!r}: {exc}") from None
    model = checkpoint.rebuild(meta, Path(dir) / "model.json")
    set_layer(model, name, head)
    return checkpoint.load(dir, device=device, model=model)

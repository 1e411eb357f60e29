"""The decomposed final layer: each class reads only its influential features.

Paper 002 (sections 5.2.3-5.2.4, "decomposed softmax"): the final layer
``logit_y = W_y . x + b_y`` is replaced by
``logit_y = sum_{j in I_y} W'_{y,j} x_j + b_y`` with ``W'`` initialised from
``W[y, I_y]``; its cost drops from ``m x K`` to ``k2 x K`` multiply-adds.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import InputError, LayerError
from ..layers import final_linear, get_layer, set_layer
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

"""Excitation Backprop (Zhang et al. 2016, "Top-down Neural Attention by Excitation
Backprop"), eqs. (5)-(8); a baseline of the re-label distillation paper (004).

The marginal winning probability (MWP) of a neuron is passed top-down from the
target class (probability 1): a neuron ``a_i`` of the layer below receives from
each parent ``a_j`` the share ``a_i w+_ij / sum_i' a_i' w+_i'j`` of ``P(a_j)``
(positive weights only, biases ignored), so non-negative activations keep the
mass: the MWP sums to 1 at every layer (less only where a unit is active through
its bias alone). This is the z+ rule of LRP with the top relevance set to 1, so the
propagation runs on :class:`~.lrp.LRP` (``rule="z+"``, stopped at ``layer``), whose
relevance, linear in its start, is divided by the target logit it starts from.
ReLUs and max pooling route the probability as the paper does (to the winner);
average pooling and residual sums share it in proportion to their inputs.

``layer`` (``"auto"``: the last spatial stage) should follow a ReLU, where
activations are non-negative, as the paper's maps at pooling/convolution layers.
``contrastive=True`` is c-MWP (eq. 9): the MWP of the target minus that of its dual
unit, whose classifier weights are negated (on a copy of the model). Maps are the
layer's MWP summed over channels and upsampled (``extras["layer_map"]``: at the
layer; ``raw``: per channel).
"""

from __future__ import annotations

import copy

import torch

from ..layers import final_linear
from ..params import Param
from ..types import Explanation
from . import register
from .base import AUTO_LAYER, BATCH_SIZE, MEMORY, UPSAMPLE
from .common import Configured, to_input_size
from .lrp import LRP

EPSILON = 1e-12  # only keeps 0 / 0 finite; a share's denominator is a sum of products


@register
class ExcitationBackprop(Configured):
    """MWP (or c-MWP with ``contrastive``) at ``layer``, summed over channels."""

    name = "excitation-backprop"
    description = "Excitation Backprop: top-down marginal winning probability (c-MWP optional)"
    family = "Propagation"
    pixel_space = False
    hyperparameters = {
        "layer": AUTO_LAYER,
        "contrastive": Param("bool", False, help="c-MWP: minus the dual unit's MWP"),
        "upsample": Param("str", "bilinear", choices=UPSAMPLE),
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }

    @classmethod
    def passes(cls, params):
        return 3.2 if params["contrastive"] else 1.6  # one (two) LRP z+ passes

    def _mwp(self, model, inputs: torch.Tensor, target: torch.Tensor, layer: str):
        """LRP's z+ relevance starts at the target logit and is linear in it: divided
        by the logit it is the MWP of a unit probability at the target."""
        relevance = LRP(  # a tiny epsilon: the shares are exact ratios (no stabiliser)
            model,
            rule="z+",
            at=layer,
            epsilon=EPSILON,
            batch_size=self.hp["batch_size"],
            memory=self.hp["memory"],
        )
        raw = relevance(inputs, target).raw
        with torch.no_grad():
            top = model(inputs).gather(1, target[:, None].to(inputs.device))[:, 0]
        top = top.to(raw.dtype)[:, None, None, None]
        safe = torch.where(top != 0, top, torch.ones_like(top))
        return torch.where(top != 0, raw / safe, torch.zeros_like(raw))

    def attribute(self, inputs, target, logits) -> Explanation:
        layer = self.layer_name(inputs)
        mwp = self._mwp(self.model, inputs, target, layer)
        if self.hp["contrastive"]:
            dual = copy.deepcopy(self.model)
            _name, head = final_linear(dual, inputs[:1])
            with torch.no_grad():
                head.weight.neg_()
            mwp = mwp - self._mwp(dual, inputs, target, layer)
        low = mwp.sum(1, keepdim=True)
        maps = to_input_size(low, tuple(inputs.shape[-2:]), self.hp["upsample"])
        return self.explanation(maps, target, raw=mwp, layer_map=low)

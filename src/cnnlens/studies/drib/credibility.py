"""Information-bottleneck credibility of the gating decisions (paper 000, section 3.2).

Paper 000 verifies its decisions with an information-bottleneck module it does
not specify, reporting a "credibility" of about 85 %. This is cnnlens' own
construction, documented as such:

1. for each gated layer, IBA (Schulz et al. 2020; :mod:`cnnlens.attribution.bottleneck`)
   at the layer's *unmasked* output (conv + BN, before the mask) of a reference
   network, on the same input and target: the ungated model when given, else
   the gated model with every gate opened (:func:`~cnnlens.studies.drib.gate.opened_gates`);
2. a channel's information is its capacity summed over space (bits);
3. with ``k`` = the number of channels the decision keeps for that input (the
   nonzeros of its chosen mask), credibility = the share of kept channels that
   are among the top-``k`` channels by information; the share of the top-``k``
   channels that the decision drops is ``1 - credibility`` by construction
   (both sets have ``k`` members), so the report adds the share of all bits
   that the kept channels carry, and the chance level ``k / C`` (a random
   choice of ``k`` channels) to read credibility against.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from ...attribution import explain
from ...attribution.bottleneck import estimate_statistics
from .counting import decisions
from .gate import gated_layers, opened_gates


@dataclass
class LayerCredibility:
    """Per-layer means over the inputs (all in [0, 1])."""

    layer: str
    credibility: float
    dropped_top: float
    kept_bits: float
    chance: float
    kept: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _reference_layer(model: nn.Module, gate_name: str, reference: nn.Module | None) -> str:
    if reference is None:
        g = gated_layers(model)[gate_name]
        return f"{gate_name}.bn" if not isinstance(g.bn, nn.Identity) else f"{gate_name}.conv"
    for conv, bn, _reads in model.drib["layers"]:
        if conv == gate_name:
            return bn or conv
    raise KeyError(gate_name)


def credibility(
    model: nn.Module,
    images: torch.Tensor,
    *,
    statistics_images: torch.Tensor,
    reference: nn.Module | None = None,
    target: torch.Tensor | None = None,
    beta: float = 10.0,
    steps: int = 10,
    samples: int = 4,
    seed: int = 0,
) -> list[LayerCredibility]:
    """Credibility of every gated layer's decisions on ``images`` (see the module docstring).

    ``statistics_images``: images (e.g. 256 training images) for IBA's layer
    statistics. ``target``: explained class per image (default: the gated
    model's prediction).
    """
    gates = gated_layers(model)
    chosen = decisions(model, images)
    if target is None:
        with torch.no_grad():
            target = model.eval()(images).argmax(1)
    ref = reference if reference is not None else model
    opened = opened_gates(model) if reference is None else contextlib.nullcontext()
    out = []
    with opened:
        for name, g in gates.items():
            layer = _reference_layer(model, name, reference)
            stats = estimate_statistics(ref, layer, statistics_images)
            e = explain(
                ref,
                images,
                "iba",
                target=target,
                layer=layer,
                statistics=stats,
                beta=beta,
                steps=steps,
                samples=samples,
                seed=seed,
            )
            bits = e.extras["capacity"].flatten(2).sum(2) / math.log(2)  # [N, C]
            kept = g.masks.detach().cpu()[chosen[name]] != 0  # [N, C]
            out.append(_score(name, bits.cpu(), kept))
    return out


def _score(name: str, bits: torch.Tensor, kept: torch.Tensor) -> LayerCredibility:
    n, c = bits.shape
    k = kept.sum(1)
    order = torch.argsort(bits, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(c).expand(n, c))
    top = rank < k[:, None]
    hits = (top & kept).sum(1).double()
    kk = k.clamp_min(1).double()
    cred = torch.where(k > 0, hits / kk, torch.ones_like(kk))
    total = bits.sum(1).double().clamp_min(1e-12)
    kept_bits = (bits * kept).sum(1).double() / total
    return LayerCredibility(
        layer=name,
        credibility=float(cred.mean()),
        dropped_top=float(1 - cred.mean()),
        kept_bits=float(kept_bits.mean()),
        chance=float((k.double() / c).mean()),
        kept=float(k.double().mean()),
    )


def overall(layers: list[LayerCredibility]) -> dict:
    """Means over layers of every per-layer value."""
    keys = ("credibility", "dropped_top", "kept_bits", "chance", "kept")
    return {k: sum(getattr(x, k) for x in layers) / len(layers) for k in keys}

"""Concept Relevance Propagation: what a prediction uses, not only where.

Achtibat et al. 2023 ("From attribution maps to human-understandable explanations
through Concept Relevance Propagation", Nature Machine Intelligence 5, 1006-1019):
a *concept* is a channel (or a set of channels) of a layer, and its conditional
heatmap is the LRP relevance of the input restricted to what flows through it
(their eq. 7: the relevance at the layer is masked to the concept's channels before
it is propagated further down).

:func:`conditional_relevance` computes those maps with cnnlens's own LRP
(:mod:`cnnlens.attribution.lrp`, its rules and composites): the ``k`` conditions of
``N`` images run as ONE backward over a batch of ``N * k`` rows (row ``i * k + j`` is
image ``i`` under condition ``j``), cut into chunks by the method's memory budget, so
``k`` heatmaps cost about ``k`` backward passes at batch size, not ``k`` calls.

:func:`concept_flow` is CRP's hierarchical explanation: the relevance of a lower
layer's channels conditioned on one upper concept, i.e. which lower concepts carry
it, and their shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...attribution import get as get_method
from ...attribution.base import check_inputs, resolve_target
from ...errors import InputError, LayerError
from ...gradmode import with_autograd
from ...hooks import HookSet, frozen
from ...layers import get_layer

Channels = Sequence[int | Sequence[int]] | None


def _layer_outputs(model: nn.Module, probe: torch.Tensor, layers: Sequence[str]) -> list[tuple]:
    """The output shape of each of ``layers`` and the order they first run in, from one
    forward of ``probe`` (one image)."""
    seen: dict[str, tuple[int, tuple[int, ...]]] = {}
    with HookSet() as hooks:
        for name in layers:

            def keep(_m, _i, out, name=name):
                if name not in seen and isinstance(out, torch.Tensor):
                    seen[name] = (len(seen), tuple(out.shape))

            hooks.forward(get_layer(model, name), keep)
        with torch.no_grad():
            model(probe)
    missing = [name for name in layers if name not in seen]
    if missing:
        raise LayerError(f"layer {missing[0]!r} does not return a tensor in the model's forward")
    return [seen[name] for name in layers]


def _conditions(channels: Channels, count: int, layer: str) -> list[list[int]]:
    """Each condition as the list of channels it keeps (an int is one channel)."""
    if channels is None:
        return [[c] for c in range(count)]
    if isinstance(channels, (int, torch.Tensor)) or not isinstance(channels, Sequence):
        channels = [int(c) for c in torch.as_tensor(channels).flatten()]
    out = []
    for entry in channels:
        group = [entry] if not isinstance(entry, Sequence) else list(entry)
        if not group:
            raise InputError("a condition must name at least one channel")
        for c in group:
            if (
                isinstance(c, bool)
                or not isinstance(c, (int, torch.Tensor))
                or not (0 <= int(c) < count)
            ):
                raise InputError(
                    f"channel {c!r} is not a channel of layer {layer!r} ({count} channels: "
                    f"0..{count - 1})"
                )
        out.append(sorted({int(c) for c in group}))
    if not out:
        raise InputError("channels is empty; give at least one channel (or None for all)")
    return out


def _lrp(model: nn.Module, composite: Any, epsilon: float, memory: Any, batch_size: Any):
    params = {"composite": composite, "epsilon": epsilon}
    if memory is not None:
        params["memory"] = memory
    if batch_size is not None:
        params["batch_size"] = batch_size
    return get_method("lrp")(model, **params)


def _prepare(model: nn.Module, inputs: torch.Tensor, target: Any) -> tuple:
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = check_inputs(inputs, model)
    device = next(model.parameters(), torch.empty(0)).device
    inputs = inputs.to(device)
    with torch.no_grad():
        targets, _ = resolve_target(model, inputs, target)
    return inputs, targets


def _expanded(
    lrp, inputs: torch.Tensor, targets: torch.Tensor, layer: str, masks: torch.Tensor,
    at: str | None, reduce: Any,
) -> torch.Tensor:  # fmt: skip
    """One LRP backward over ``N * k`` rows: row ``i * k + j`` is image ``i`` with the
    signal at ``layer`` masked by ``masks[j]``."""
    k = len(masks)
    rows = torch.arange(len(inputs) * k, device=inputs.device)
    image, condition = rows // k, rows % k
    raw, _, _ = lrp.propagate(
        len(rows),
        lambda lo, hi: inputs[image[lo:hi]],
        targets[image],
        at=at,
        chunk=lrp.chunk(inputs),
        condition=(layer, lambda lo, hi: masks[condition[lo:hi]]),
        reduce=reduce,
    )
    return raw


@with_autograd
def conditional_relevance(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    layer: str,
    channels: Channels = None,
    target: int | torch.Tensor | None = None,
    composite: Any = "epsilon-plus",
    epsilon: float = 1e-6,
    memory: Any = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Concept-conditional LRP heatmaps ``[N, len(channels), H, W]`` (Achtibat et al.
    2023, eq. 7).

    Map ``[i, j]`` is the LRP relevance of image ``i``'s pixels (summed over the colour
    channels, as ``cnnlens.explain(..., "lrp")``) for class ``target`` (None: each
    image's predicted class), restricted to the relevance that flows through
    ``channels[j]`` of ``layer``'s output. An entry of ``channels`` is a channel index
    or a list of them (a concept of several channels); None means every channel, one
    condition each. ``composite`` and ``epsilon`` are LRP's
    (:data:`cnnlens.attribution.lrp.COMPOSITES`). Conditions share one backward over
    a batch expanded ``len(channels)`` times, chunked by ``memory`` / ``batch_size``.

    Relevance is linear in what a layer receives, so the maps of every channel of a
    layer that every path passes through sum to the unconditioned LRP map.
    The model is left as it was.
    """
    lrp = _lrp(model, composite, epsilon, memory, batch_size)
    with frozen(model):
        inputs, targets = _prepare(model, inputs, target)
        ((_order, shape),) = _layer_outputs(model, inputs[:1], [layer])
        if len(shape) < 2:
            raise LayerError(f"layer {layer!r} gives a {shape} output; CRP needs [N, C, ...]")
        conditions = _conditions(channels, shape[1], layer)
        masks = torch.zeros(len(conditions), shape[1], device=inputs.device)
        for j, group in enumerate(conditions):
            masks[j, group] = 1.0
        maps = _expanded(lrp, inputs, targets, layer, masks, None, lambda r: r.sum(1))
    return maps.view(len(inputs), len(conditions), *inputs.shape[-2:]).float()


@dataclass
class ConceptFlow:
    """CRP's hierarchical explanation of one concept: the lower-layer channels that carry
    its relevance. ``shares[c]`` is lower channel ``c``'s relevance conditioned on the
    upper concept over their sum (signed; they sum to 1), over all the given images;
    ``edges`` keep the ``top`` largest."""

    layer: str
    channel: int
    lower: str
    relevance: float
    shares: torch.Tensor
    targets: list[int]
    edges: list[dict] = field(default_factory=list)

    @property
    def nodes(self) -> list[dict]:
        upper = {"id": f"{self.layer}:{self.channel}", "layer": self.layer,
                 "channel": self.channel, "relevance": self.relevance}  # fmt: skip
        lower = [
            {"id": e["source"], "layer": self.lower, "channel": e["channel"],
             "relevance": e["relevance"]}
            for e in self.edges
        ]  # fmt: skip
        return [upper, *lower]

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "channel": self.channel,
            "lower": self.lower,
            "relevance": self.relevance,
            "targets": self.targets,
            "nodes": self.nodes,
            "edges": self.edges,
        }


@with_autograd
def concept_flow(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    layer: str,
    channel: int,
    lower: str,
    target: int | torch.Tensor | None = None,
    top: int = 5,
    composite: Any = "epsilon-plus",
    epsilon: float = 1e-6,
    memory: Any = None,
    batch_size: int | None = None,
) -> ConceptFlow:
    """Which channels of ``lower`` carry the relevance of concept ``channel`` of
    ``layer`` (Achtibat et al. 2023, section "hierarchical explanations"): LRP
    conditioned on the concept at ``layer``, read at ``lower``'s output and summed over
    its positions and the images. ``lower`` must run before ``layer``."""
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise InputError(f"top must be a positive integer, got {top!r}")
    lrp = _lrp(model, composite, epsilon, memory, batch_size)
    with frozen(model):
        inputs, targets = _prepare(model, inputs, target)
        (up, up_shape), (low, _low_shape) = _layer_outputs(model, inputs[:1], [layer, lower])
        if low >= up:
            raise LayerError(f"lower layer {lower!r} must run before {layer!r} in the forward")
        (group,) = _conditions([channel], up_shape[1], layer)
        masks = torch.zeros(1, up_shape[1], device=inputs.device)
        masks[0, group] = 1.0
        per_channel = _expanded(lrp, inputs, targets, layer, masks, lower, lambda r: r.sum((2, 3)))
    relevance = per_channel.sum(0).double()
    total = float(relevance.sum())
    shares = relevance / total if total != 0 else torch.zeros_like(relevance)
    order = torch.argsort(shares.abs(), descending=True)[:top]
    edges = [
        {"source": f"{lower}:{int(c)}", "target": f"{layer}:{channel}", "channel": int(c),
         "relevance": float(relevance[c]), "share": float(shares[c])}
        for c in order
    ]  # fmt: skip
    return ConceptFlow(layer, int(channel), lower, total, shares.float(),
                       [int(t) for t in targets], edges)  # fmt: skip

"""Dynamic MACs per input and the reduction ratio (paper 000, section 4.1).

A gated conv costs ``k^2 C_in_active C_out_active H_out W_out`` for an input,
with ``C_out_active`` the nonzeros of its chosen mask and ``C_in_active`` the
nonzeros of the chosen mask of the gated layer it reads (zeros survive ReLU
and pooling; the full ``C_in`` when it reads no gated layer), plus its
decision head's ``C_in m``. A conv that is not gated but reads a gated
layer's output (ResNet's ``conv2`` after a gated ``conv1``) reads only the
active channels too, so it costs ``C_in_active`` instead of ``C_in``: that is
what :mod:`cnnlens.studies.drib.sparse` computes. Every other layer counts as
:func:`cnnlens.macs` counts it. The reduction ratio is
``(M_before - M_after) / M_before x 100`` (paper 000 prints ``/ M_after``, but
its numbers divide by ``M_before``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...chunking import run_chunked
from ...cost import macs
from ...data.adapt import as_dataset
from ...errors import InputError
from ...hooks import frozen
from ...placement import model_device
from .gate import gated_layers


def _images(data) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise InputError(f"images must be [N,C,H,W], got {tuple(data.shape)}")
        return data, None
    ds = as_dataset(data)
    return ds.tensors()


@torch.no_grad()
def decisions(model: nn.Module, data, *, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Chosen mask index ``[N]`` of every gated layer on ``data`` (eval mode, argmax)."""
    gates = gated_layers(model)
    x, _ = _images(data)
    device = model_device(model)

    def run(a: int, b: int) -> tuple[torch.Tensor, ...]:
        model(x[a:b].to(device))
        return tuple(g.last_index.cpu() for g in gates.values())

    with frozen(model):
        out = run_chunked(run, len(x), batch_size)
    return dict(zip(gates, out, strict=True))


@dataclass
class DynamicMacs:
    """MACs per input (``per_input`` ``[N]``), their mean, per-layer means and ``before``."""

    per_input: torch.Tensor
    layers: dict[str, float]
    before: int

    @property
    def mean(self) -> float:
        return float(self.per_input.double().mean())

    @property
    def reduction_ratio(self) -> float:
        """``(M_before - M_after) / M_before x 100`` with the mean dynamic MACs."""
        return 100.0 * (self.before - self.mean) / self.before

    def to_dict(self) -> dict:
        return {
            "before": self.before,
            "mean": self.mean,
            "reduction_ratio": self.reduction_ratio,
            "layers": self.layers,
        }


def active_channels(model: nn.Module, chosen: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Nonzeros of the chosen mask per input ``[N]`` for every gated layer."""
    gates = gated_layers(model)
    return {
        name: (gates[name].masks.detach() != 0).sum(1).cpu()[idx] for name, idx in chosen.items()
    }


def dynamic_macs(
    model: nn.Module, data, *, chosen: dict[str, torch.Tensor] | None = None
) -> DynamicMacs:
    """Dynamic MACs of a gated ``model`` per input of ``data`` (see the module docstring).

    ``chosen``: the decisions (:func:`decisions`) if already known.
    """
    gates = gated_layers(model)
    x, _ = _images(data)
    chosen = decisions(model, x) if chosen is None else chosen
    n = len(next(iter(chosen.values())))
    links = getattr(model, "drib", {}).get("links", {})
    full = macs(model, tuple(x.shape[1:])).layers
    heads = {f"{g}.head" for g in gates}
    before = sum(v for k, v in full.items() if k not in heads)
    active = active_channels(model, chosen)
    modules = dict(model.named_modules())
    per_layer: dict[str, torch.Tensor] = {}
    for name, value in full.items():
        factor = torch.ones(n, dtype=torch.float64)
        owner = name[: -len(".conv")] if name.endswith(".conv") else None
        reader = owner if owner in gates else name
        if owner in gates:
            factor = factor * active[owner] / gates[owner].conv.out_channels
        if reader in links:
            conv = modules[name]
            factor = factor * active[links[reader]] / conv.in_channels
        per_layer[name] = value * factor
    total = torch.stack(list(per_layer.values())).sum(0)
    return DynamicMacs(
        per_input=total,
        layers={k: float(v.mean()) for k, v in per_layer.items()},
        before=before,
    )

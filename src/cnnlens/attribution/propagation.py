"""DeepLIFT with the Rescale rule (Shrikumar et al. 2017, section 3.3).

The input and its reference run as one batch ``[x; x0]``. Every activation
module's backward is replaced by the multiplier ``m = (y - y0) / (x - x0)``
(the plain derivative where ``|x - x0| < 1e-10``, as Captum), linear layers
keep their gradient, and the attribution is ``(x - x0) * m_x``. Summation-to-
delta holds: ``sum(attr) = S(x) - S(x0)`` (``extras["delta"]`` holds the
residual per image). Reused activation modules are handled per call; an
activation applied as a function raises a :class:`LayerError`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..batching import run_chunked
from ..nets.checks import ACTIVATIONS
from ..types import Explanation
from . import register
from .common import Configured, spatial, stored_layer, sum_channels, target_scores, to_input_size
from .gradient import make_baseline
from .modified_backward import check_rule_model, modified_activations

EPS = 1e-10


class _Rescale(torch.autograd.Function):
    """Forward: the activation's output; backward: the Rescale multiplier."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, out: torch.Tensor, module: nn.Module) -> torch.Tensor:
        ctx.module = module
        ctx.save_for_backward(x, out)
        return out.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, y = ctx.saved_tensors
        n = x.shape[0] // 2
        dx = x[:n] - x[n:]
        dy = y[:n] - y[n:]
        if isinstance(ctx.module, nn.ReLU):
            slope = (x[:n] > 0).to(grad.dtype)
        else:
            with torch.enable_grad():
                xd = x[:n].detach().requires_grad_(True)
                (slope,) = torch.autograd.grad(ctx.module(xd).sum(), xd)
        small = dx.abs() < EPS
        m = torch.where(small, slope, dy / torch.where(small, torch.ones_like(dx), dx))
        return grad * torch.cat([m, m]), None, None


def rescale(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return _Rescale.apply(x, out, module)


def _is_activation(module: nn.Module):
    return rescale if isinstance(module, ACTIVATIONS) else None


@register
class DeepLift(Configured):
    """DeepLIFT-Rescale; ``baseline`` as Integrated Gradients (default zeros)."""

    name = "deeplift"
    description = "DeepLIFT with the Rescale rule against a baseline (default zeros)"
    defaults: ClassVar[dict[str, Any]] = {
        "baseline": "zeros",
        "at": None,
        "seed": 0,
        "batch_size": None,
    }
    fused_target = True

    def attribute(self, inputs, target, logits) -> Explanation:
        at = self.hp["at"] if self.hp["at"] is None else self.layer_name(inputs, "at")
        base = make_baseline(inputs, self.hp["baseline"], self.hp["seed"])
        check_rule_model(self.model, inputs, self.name, _is_activation)

        def run(lo: int, hi: int):
            x, x0 = inputs[lo:hi], base[lo:hi]
            n = hi - lo
            both = torch.cat([x, x0]).detach()
            if at is None:
                both.requires_grad_(True)
                out = self.model(both)
                a = both
            else:
                with stored_layer(self.model, at) as store:
                    out = self.model(both)
                a = store["out"]
                spatial(at, a)
            t = self.chunk_targets(out[:n], target, lo, hi)
            score = target_scores(out[:n], t)
            (g,) = torch.autograd.grad(score.sum(), a)
            diff = a[:n] - a[n:]
            expected = score.detach() - target_scores(out[n:].detach(), t)
            return diff.detach() * g[:n], t, expected

        size = max(1, self.chunk(inputs) // 2)
        with modified_activations(self.model, _is_activation):
            raw, target, expected = run_chunked(run, len(inputs), size)
        maps = to_input_size(sum_channels(raw), tuple(inputs.shape[-2:]))
        delta = raw.flatten(1).sum(1) - expected
        return self.explanation(maps, target, raw=raw, delta=delta)

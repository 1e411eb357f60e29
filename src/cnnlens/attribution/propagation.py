"""DeepLIFT with the Rescale rule (Shrikumar et al. 2017, section 3.3).

The reference ``x0`` runs first without gradients (once, at batch 1, when
all images share it); then the input runs forward and backward once. Every
activation module's backward is replaced by the multiplier ``m = (y - y0) / (x - x0)``
(the plain derivative where ``|x - x0| < 1e-10``, as Captum), ``nn.MaxPool2d``
gets the max-pool rule of :func:`_maxpool_multiplier`, linear layers keep their
gradient, and the attribution is ``(x - x0) * m_x``. Summation-to-
delta holds: ``sum(attr) = S(x) - S(x0)`` (``extras["delta"]`` holds the
residual per image). Reused activation modules are handled per call; an
activation applied as a function raises a :class:`LayerError` (a functional
``F.max_pool2d`` cannot be seen and keeps its gradient: use ``nn.MaxPool2d``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..chunking import run_chunked
from ..errors import LayerError
from ..hooks import HookSet
from ..nets.checks import ACTIVATIONS
from ..params import Param
from ..types import Explanation
from . import register
from .base import AT_LAYER, BASELINE, BATCH_SIZE, MEMORY, SEED
from .common import Configured, spatial, stored_layer, sum_channels, target_scores, to_input_size
from .gradient import make_baseline, shared_baseline
from .modified_backward import check_rule_model, modified_activations, passthrough

EPS = 1e-10


def _rescale_multiplier(module, grad, x, y, x0, y0) -> torch.Tensor:
    """Rescale rule (section 3.3): ``(y - y0) / (x - x0)``, the slope where ``|x - x0| < 1e-10``."""
    dx = x - x0
    m = (y - y0).div_(dx)  # inf / nan where dx is ~0: replaced by the slope below
    if isinstance(module, nn.ReLU):
        slope = x > 0
    else:
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            (slope,) = torch.autograd.grad(module(xd).sum(), xd)
    return torch.where(dx.abs_() < EPS, slope, m).mul_(grad)


def _maxpool_multiplier(module, grad, x, y, x0, y0) -> torch.Tensor:
    """Max pooling (section 3.5.3; Captum's rule), gradient times multiplier.

    Output ``o`` changes by ``y_o - y0_o``. With ``t = max(y_o, y0_o)`` the part
    ``t - y0_o`` is sent to the input's argmax and ``y_o - t`` to the
    reference's argmax (scatter-added, so overlapping windows sum), then
    divided by ``x - x0``; the plain pooling gradient where ``|x - x0| < 1e-10``.
    Summation-to-delta holds across the layer.
    """
    kw = {
        "kernel_size": module.kernel_size, "stride": module.stride, "padding": module.padding,
        "dilation": module.dilation, "ceil_mode": module.ceil_mode, "return_indices": True,
    }  # fmt: skip
    _, index = F.max_pool2d(x, **kw)
    _, index0 = F.max_pool2d(x0, **kw)
    y0, index0 = y0.expand_as(y), index0.expand_as(index)  # a shared reference
    top = torch.maximum(y, y0)

    def unpool(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        flat = values.new_zeros(*x.shape[:2], x.shape[2] * x.shape[3])
        return flat.scatter_add_(2, where.flatten(2), values.flatten(2)).view_as(x)

    moved = unpool(grad * (top - y0), index) + unpool(grad * (y - top), index0)
    dx = x - x0
    return torch.where(dx.abs() < EPS, unpool(grad, index), moved / dx)


class _DeepLiftRule(torch.autograd.Function):
    """Forward: the module's output (a view, no copy); backward: the gradient times
    DeepLIFT's multiplier against the reference's input and output ``x0, y0``."""

    @staticmethod
    def forward(ctx, x, out, x0, y0, module: nn.Module) -> torch.Tensor:
        ctx.module = module
        ctx.save_for_backward(x, out, x0, y0)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rule = _maxpool_multiplier if isinstance(ctx.module, nn.MaxPool2d) else _rescale_multiplier
        return rule(ctx.module, grad, *ctx.saved_tensors), None, None, None, None


def _has_rule(module: nn.Module) -> bool:
    """Activations and max pools (not one returning (values, indices): plain gradient)."""
    if isinstance(module, nn.MaxPool2d):
        return not module.return_indices
    return isinstance(module, ACTIVATIONS)


def _is_activation(module: nn.Module):
    return passthrough if _has_rule(module) else None


@dataclass
class Reference:
    """What the reference input ``x0`` produces: each activation or max-pool call's
    input and output (per module, in call order), the logits, and layer ``at``'s output."""

    activations: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]
    logits: torch.Tensor
    layer: torch.Tensor | None

    def rule(self):
        """A :func:`modified_activations` selector applying Rescale against this reference."""
        queues = {m: deque(calls) for m, calls in self.activations.items()}

        def rescale(module, x, out):
            try:
                x0, y0 = queues[module].popleft()
            except (KeyError, IndexError):
                raise LayerError(
                    f"DeepLIFT: {type(module).__name__} ran more often for the input than for "
                    "the reference; the forward pass must not depend on the input's values"
                ) from None
            return _DeepLiftRule.apply(x, out, x0, y0, module)

        return lambda m: rescale if _has_rule(m) else None


def reference_pass(model: nn.Module, x0: torch.Tensor, at: str | None) -> Reference:
    """One forward of the reference without gradients, recording every activation call."""
    calls: dict[nn.Module, list] = {}
    with HookSet() as hooks, torch.no_grad():
        for module in model.modules():
            if not _has_rule(module):
                continue
            kept: list[torch.Tensor] = []

            def pre(_m, inputs, kept=kept):
                kept.append(inputs[0].clone())  # copies: later in-place ops cannot alter them

            def post(m, _inputs, out, kept=kept):
                calls.setdefault(m, []).append((kept.pop(), out.clone()))

            hooks.forward_pre(module, pre)
            hooks.forward(module, post)
        if at is None:
            logits, layer = model(x0), None
        else:
            with stored_layer(model, at) as store:
                logits = model(x0)
            layer = store["out"].detach()
    return Reference(calls, logits, layer)


@register
class DeepLift(Configured):
    """DeepLIFT-Rescale; ``baseline`` as Integrated Gradients (default zeros).

    The reference runs first, without gradients, recording every activation's
    input and output; a baseline shared by all images (the default zeros)
    runs once at batch 1 and is broadcast. The input then needs one forward +
    backward, so DeepLIFT costs about one gradient pass.
    """

    name = "deeplift"
    description = "DeepLIFT with the Rescale rule against a baseline (default zeros)"
    hyperparameters: ClassVar[dict[str, Param]] = {
        "baseline": BASELINE,
        "at": AT_LAYER,
        "seed": SEED,
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }
    fused_target = True

    def attribute(self, inputs, target, logits) -> Explanation:
        at = self.hp["at"] if self.hp["at"] is None else self.layer_name(inputs, "at")
        base = make_baseline(inputs, self.hp["baseline"], self.hp["seed"])
        copy = check_rule_model(self.model, inputs, self.name, _is_activation)
        shared = shared_baseline(base)
        common = reference_pass(self.model, shared, at) if shared is not None else None

        def run(lo: int, hi: int):
            ref = common or reference_pass(self.model, base[lo:hi], at)
            x = inputs[lo:hi].detach()
            with modified_activations(self.model, ref.rule(), copy=copy):
                if at is None:
                    x.requires_grad_(True)
                    out = self.model(x)
                    a, a0 = x, base[lo:hi]
                else:
                    with stored_layer(self.model, at) as store:
                        out = self.model(x)
                    a, a0 = store["out"], ref.layer
                    spatial(at, a)
            t = self.chunk_targets(out, target, lo, hi)
            score = target_scores(out, t)
            (g,) = torch.autograd.grad(score.sum(), a)
            ref_logits = ref.logits.expand(hi - lo, -1)
            expected = score.detach() - target_scores(ref_logits, t)
            return (a.detach() - a0) * g, t, expected

        raw, target, expected = run_chunked(run, len(inputs), self.chunk(inputs))
        maps = to_input_size(sum_channels(raw), tuple(inputs.shape[-2:]))
        delta = raw.flatten(1).sum(1) - expected
        return self.explanation(maps, target, raw=raw, delta=delta)

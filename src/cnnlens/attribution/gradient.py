"""Gradient family: saliency, input x gradient, Integrated Gradients, Guided
Backprop and Deconvnet (survey paper 001, section on gradient-based methods).

Each method attributes to the input, or with ``at="layer3"`` to that layer's
output (feature attribution: ``raw`` is then ``[N,C',h,w]`` at the layer and
``maps`` its channel reduction upsampled to the input size). Every forward +
backward runs through the batching helper; Integrated Gradients' images x
steps go together in chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..accel import fast_model, fast_runner
from ..chunking import run_chunked
from ..errors import InputError
from ..hooks import replace_output
from ..params import Param
from ..types import Explanation
from . import register
from .base import AT_LAYER, BASELINE, BATCH_SIZE, MEMORY, SEED
from .common import (
    Configured,
    max_abs_channels,
    spatial,
    stored_layer,
    sum_channels,
    target_scores,
    to_input_size,
)
from .modified_backward import (
    check_rule_model,
    deconv_relu,
    guided_relu,
    modified_activations,
    relu_modules,
)


def layer_gradient(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
    at: str | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A, dS/dA, logits, target)`` for ``A`` = the input or layer ``at``'s output.

    ``model`` may be any function of the input when ``at`` is None.
    ``S`` is the sum over images of each image's target logit, so each image
    gets its own gradient. ``target`` may be a function of the logits (the
    predicted class, resolved in the same pass). Gradients come from
    ``torch.autograd.grad``.
    """
    x = x.detach()
    if at is None:
        x.requires_grad_(True)
        out = model(x)
        a = x
    else:
        with stored_layer(model, at) as store:
            out = model(x)
        a = store["out"]
        spatial(at, a)
    t = target(out) if callable(target) else target
    (g,) = torch.autograd.grad(target_scores(out, t).sum(), a)
    return a.detach(), g.contiguous(), out.detach(), t


class GradientMethod(Configured):
    """Shared driver: chunked ``layer_gradient``, then ``combine`` and ``reduce``."""

    fused_target = True
    family = "Gradient"

    hyperparameters: ClassVar[dict[str, Param]] = {
        "at": AT_LAYER,
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }

    @classmethod
    def passes(cls, params):
        return 1.0

    reduce = staticmethod(max_abs_channels)

    def combine(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g

    def context(self, inputs: torch.Tensor, model: nn.Module | None = None):
        """Context manager active during the gradient passes on ``model`` (default:
        the model; else its channels-last copy): modified backward rules."""
        import contextlib

        return contextlib.nullcontext()

    def attribute(self, inputs, target, logits) -> Explanation:
        at = self.hp["at"]
        if at is not None:
            self.layer_name(inputs, "at")
        # gradients to the input run on the channels-last copy where it applies; the
        # rules of guided backprop / deconvnet are hooked into that copy
        model, layout = (
            fast_model(self.model, inputs) if at is None else (self.model, torch.contiguous_format)
        )

        def run(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
            pick = lambda out: self.chunk_targets(out, target, lo, hi)  # noqa: E731
            x = inputs[lo:hi].contiguous(memory_format=layout)
            a, g, _, t = layer_gradient(model, x, pick, at)
            return self.combine(a, g).contiguous(), t

        with self.context(inputs, model):
            raw, target = run_chunked(run, len(inputs), self.chunk(inputs))
        return self.pack(raw, inputs, target)

    def pack(self, raw: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor, **extras):
        maps = to_input_size(self.reduce(raw), tuple(inputs.shape[-2:]))
        return self.explanation(maps, target, raw=raw, **extras)


@register
class Saliency(GradientMethod):
    """Simonyan et al. 2014, eq. (3)-(4): ``max_c |dS_t/dx_c|``."""

    name = "saliency"
    description = "gradient magnitude of the target logit (Simonyan et al. 2014)"


@register
class InputXGradient(GradientMethod):
    """Shrikumar et al. 2016: ``x * dS_t/dx`` summed over channels."""

    name = "input-x-gradient"
    description = "input times gradient of the target logit, summed over channels"
    reduce = staticmethod(sum_channels)

    def combine(self, a, g):
        return a * g


class _ReluRuleMethod(GradientMethod):
    rule = staticmethod(guided_relu)

    def context(self, inputs, model=None):
        model = self.model if model is None else model
        copy = check_rule_model(model, inputs, self.name, relu_modules(self.rule))
        return modified_activations(model, relu_modules(self.rule), copy=copy)


@register
class GuidedBackprop(_ReluRuleMethod):
    """Springenberg et al. 2015: ReLU passes only positive gradients at positive inputs."""

    name = "guided-backprop"
    description = "guided backpropagation: positive gradients through active ReLUs"


@register
class Deconvnet(_ReluRuleMethod):
    """Zeiler & Fergus 2014: ReLU passes positive gradients, ignoring the forward mask."""

    name = "deconvnet"
    description = "deconvnet: ReLU backward keeps positive gradients only"
    rule = staticmethod(deconv_relu)


# --------------------------------------------------------------- Integrated Gradients


INTEGRATIONS = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann",
    "riemann_trapezoid",
)


def quadrature(
    steps: int, integration: str, device: torch.device, dtype: torch.dtype = torch.float32
):
    """Nodes ``alpha [S]`` in [0,1] and weights ``[S]`` (sum 1) of a rule on [0,1], computed
    in float64 and returned in ``dtype`` (the inputs' own: float64 inputs get float64 nodes).

    Riemann rules as in Captum (left, right, middle, trapezoid); Gauss-Legendre
    by the Golub-Welsch eigenvalue method (exact for polynomials of degree
    ``2S-1``).
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    n = steps
    i = torch.arange(n, dtype=torch.float64)
    if integration == "gausslegendre":
        k = torch.arange(1, n, dtype=torch.float64)
        beta = k / torch.sqrt(4 * k * k - 1)
        jacobi = torch.diag(beta, 1) + torch.diag(beta, -1)
        nodes, vectors = torch.linalg.eigh(jacobi)
        alphas, weights = (nodes + 1) / 2, vectors[0] ** 2
    elif integration in ("riemann_left", "riemann_right", "riemann_middle", "riemann"):
        shift = {"riemann_left": 0.0, "riemann_right": 1.0}.get(integration, 0.5)
        alphas, weights = (i + shift) / n, torch.full((n,), 1.0 / n, dtype=torch.float64)
    elif integration == "riemann_trapezoid":
        if n < 2:
            raise InputError("riemann_trapezoid needs steps >= 2")
        alphas = i / (n - 1)
        weights = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (n - 1)
    else:
        raise InputError(
            f"integration must be 'gausslegendre', 'riemann' (= riemann_middle), "
            f"'riemann_left', 'riemann_right', 'riemann_middle' or 'riemann_trapezoid', "
            f"got {integration!r}"
        )
    return alphas.to(dtype).to(device), weights.to(dtype).to(device)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur per channel with reflect padding."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def make_baseline(inputs: torch.Tensor, baseline: Any, seed: int) -> torch.Tensor:
    """``"zeros"`` (Captum's default), ``"blur"`` (Gaussian, sigma = size/8),
    ``"uniform"`` (noise in each image's per-channel value range, seeded; the same
    draw scaled to each image's range, whatever the batch) or a tensor broadcastable
    to the inputs."""
    if isinstance(baseline, torch.Tensor):
        try:
            return baseline.to(inputs).expand_as(inputs).contiguous()
        except RuntimeError as exc:
            raise InputError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to the inputs "
                f"{tuple(inputs.shape)}"
            ) from exc
    if baseline in (None, "zeros", 0, 0.0):
        return torch.zeros_like(inputs)
    if baseline == "blur":
        return gaussian_blur(inputs, max(inputs.shape[-2:]) / 8)
    if baseline == "uniform":
        gen = torch.Generator(device=inputs.device).manual_seed(int(seed))
        lo = inputs.amin((2, 3), keepdim=True)
        hi = inputs.amax((2, 3), keepdim=True)
        u = torch.rand(
            (1, *inputs.shape[1:]), generator=gen, device=inputs.device, dtype=inputs.dtype
        )
        return lo + u * (hi - lo)
    raise InputError(f"baseline must be 'zeros', 'blur', 'uniform' or a tensor, got {baseline!r}")


def shared_baseline(base: torch.Tensor) -> torch.Tensor | None:
    """``base[:1]`` when every image has the same baseline (zeros, a constant), else None."""
    if len(base) == 1 or bool((base == base[:1]).all()):
        return base[:1]
    return None


@register
class IntegratedGradients(GradientMethod):
    """Sundararajan et al. 2017, eq. (1): ``(x - x') * int_0^1 dS(x' + a(x - x'))/dx da``.

    ``steps`` nodes of ``integration`` (Gauss-Legendre by default, as Captum);
    ``extras["completeness_error"]`` holds ``sum(attr) - (S(x) - S(x'))`` per
    image (Axiom: Completeness), which goes to 0 as ``steps`` grows. With
    ``at="layer3"`` the path runs between the layer's activations for the
    baseline and for the input (Captum's LayerIntegratedGradients).
    """

    name = "integrated-gradients"
    description = "Integrated Gradients along a straight path from a baseline"
    reduce = staticmethod(sum_channels)
    hyperparameters: ClassVar[dict[str, Param]] = {
        "steps": Param("int", 50, min=1),
        "baseline": BASELINE,
        "integration": Param("str", "gausslegendre", choices=INTEGRATIONS),
        "at": AT_LAYER,
        "seed": SEED,
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }
    uses_logits = True
    fused_target = False
    complete = True

    @classmethod
    def passes(cls, params):
        return params["steps"] + 1.0  # the path's steps and the target's forward

    def attribute(self, inputs, target, logits) -> Explanation:
        hp = self.hp
        steps = hp["steps"]
        alphas, weights = quadrature(steps, hp["integration"], inputs.device, inputs.dtype)
        base = make_baseline(inputs, hp["baseline"], hp["seed"])
        at = hp["at"] if hp["at"] is None else self.layer_name(inputs, "at")
        n = len(inputs)
        shared = shared_baseline(base)  # zeros: one batch-1 forward for every image
        with torch.no_grad():
            base_logits = self.model(base if shared is None else shared).expand(n, -1)
        if at is None:
            start_pt, end_pt = base, inputs
        else:
            with torch.no_grad(), stored_layer(self.model, at) as store:
                self.model(base)
                start_pt = store["out"].detach()
                self.model(inputs)
                end_pt = store["out"].detach()
            spatial(at, end_pt)
        delta = end_pt - start_pt
        total = torch.zeros_like(end_pt)
        size = self.chunk(inputs)
        if hp["batch_size"] is None and size >= steps:
            size -= size % steps  # whole images per chunk when they fit
        model = fast_runner(self.model, inputs) if at is None else self.model

        def run(lo: int, hi: int) -> torch.Tensor:
            idx = torch.arange(lo, hi, device=inputs.device)
            img, step = idx // steps, idx % steps
            a = alphas[step].view(-1, *([1] * (end_pt.dim() - 1)))
            point = start_pt[img] + a * delta[img]
            if at is None:
                _, g, _, _ = layer_gradient(model, point, target[img], None)
            else:
                leaf = point.detach().requires_grad_(True)
                with replace_output(self.model, at, lambda _out: leaf):
                    out = self.model(inputs[img])
                (g,) = torch.autograd.grad(target_scores(out, target[img]).sum(), leaf)
            total.index_add_(0, img, g * weights[step].view_as(a))
            return idx

        run_chunked(run, n * steps, size)
        raw = delta * total
        expected = target_scores(logits, target) - target_scores(base_logits, target)
        error = raw.flatten(1).sum(1) - expected
        return self.pack(raw, inputs, target, completeness_error=error)

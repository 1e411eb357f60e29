"""LRP rules as small autograd functions, and BatchNorm folding in a copy.

Relevance flows backward as the "gradient": the target logit's relevance is
``S_t(x)`` and each layer's backward returns the relevance of its input
(Montavon et al. 2019, "Layer-wise Relevance Propagation: an overview",
eqs. 3-6; the rule set of Zennit). Rules for a layer ``z = W a + b``:

* ``epsilon``: ``R_a = a * W^T (R / (z + eps sign z))`` — done without any
  recomputation by multiplying by ``a`` before the layer and dividing by the
  stabilised ``z`` after it;
* ``z+``: positive contributions only, ``a+ W+`` and ``a- W-`` (no bias);
* ``alpha{A}-beta{B}``: ``A * R+ - B * R-`` over positive / negative
  contributions (no bias), ``A - B = 1``;
* ``zb`` (z^B, input layer): ``R = (x W - l W+ - h W-)`` shares with bounds
  ``l <= x <= h``.

Conservation: ``sum R_in = sum R_out`` for every rule here when biases are
zero and ``eps -> 0`` (tested).

Two forms of the backward signal. In the *relevance form* the signal at a
tensor ``t`` is ``R_t`` itself. In the *message form* it is ``g_t`` with
``R_t = t * g_t``: every rule whose relevance is proportional to its input
(epsilon, z+, alpha-beta, the proportional split of a sum, ReLU and max
pooling) then needs no multiplication by the input, and the epsilon rule
becomes the plain gradient times ``z / (z + eps sign z)`` at the layer's
output — one elementwise factor and no recomputation:
``g_a = R_a / a = W^T (R_z / stab(z)) = W^T (g_z z / stab(z))``.
The input's relevance is ``x * g_x`` at the end. Rules whose relevance is not
proportional to the input (z^B, relevance passed unchanged through a
saturating activation) need the relevance form.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps * sign(z)`` with ``sign(0) = 1`` (``copysign``: one fused op)."""
    if eps == 0:
        return z
    return z + torch.copysign(z.new_full((), eps), z)


def _out(t: torch.Tensor, copy: bool) -> torch.Tensor:
    """A rule's forward output: ``t`` itself (autograd makes it a view, no copy), or a
    copy when the model modifies it in place afterwards (autograd forbids that on views)."""
    return t.clone() if copy else t


class TimesInput(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by the input."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, copy: bool = False) -> torch.Tensor:
        ctx.save_for_backward(x)
        return _out(x, copy)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return x * grad, None


class _AtLinearOutput(torch.autograd.Function):
    """Identity forward on a linear output ``z``, kept with ``eps`` for the backward."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, eps: float, copy: bool = False) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.eps = eps
        return _out(z, copy)


class DivideStabilized(_AtLinearOutput):
    """Relevance-form epsilon rule: backward divides the gradient by ``z + eps sign z``."""

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (z,) = ctx.saved_tensors
        return grad / stabilize(z, ctx.eps), None, None


class Stabilised(_AtLinearOutput):
    """Message-form epsilon rule: backward multiplies the message by
    ``z / (z + eps sign z)``, computed as ``1 - eps / (|z| + eps)`` in one fused
    ``addcdiv`` (at ``z = 0`` the factor is 0 up to one rounding of ``eps / eps``)."""

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (z,) = ctx.saved_tensors
        if ctx.eps == 0:
            return grad, None, None
        return torch.addcdiv(grad, grad, z.abs().add_(ctx.eps), value=-ctx.eps), None, None


class MaskSignal(torch.autograd.Function):
    """Identity forward; backward multiplies the signal by a per-row channel mask
    ``[N, C]`` (broadcast over the remaining dimensions): concept-conditional relevance."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, mask: torch.Tensor, copy: bool = False) -> torch.Tensor:
        ctx.mask = mask
        return _out(t, copy)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        mask = ctx.mask.to(grad.dtype).view(*ctx.mask.shape, *[1] * (grad.dim() - 2))
        return grad * mask, None, None


class Recompute(torch.autograd.Function):
    """Forward: the layer's output; backward: ``relevance(x, R)`` of the rule."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, out: torch.Tensor, relevance: Callable, copy: bool = False
    ) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.relevance = relevance
        return _out(out, copy)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            r = ctx.relevance(x.detach(), grad)
        return r, None, None, None


class RecomputeMessage(torch.autograd.Function):
    """Message form of :class:`Recompute`: backward turns the message into the
    relevance ``R_z = z * g_z`` and returns ``message(x, R_z)`` (``R_x / x``)."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, out: torch.Tensor, message: Callable, copy: bool = False
    ) -> torch.Tensor:
        ctx.save_for_backward(x, out)
        ctx.message = message
        return _out(out, copy)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, out = ctx.saved_tensors
        return ctx.message(x.detach(), grad * out), None, None, None


class Pass(torch.autograd.Function):
    """Identity backward: relevance crosses an elementwise activation unchanged."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, out: torch.Tensor, copy: bool = False) -> torch.Tensor:
        return _out(out, copy)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


class ProportionalAdd(torch.autograd.Function):
    """``a + b``; relevance splits in proportion: ``R_a = a / (a+b) R`` (Zennit's SumSingle)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
        out = a + b
        ctx.save_for_backward(a, b, out.detach().clone())
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b, out = ctx.saved_tensors
        s = grad / stabilize(out, ctx.eps)
        ra = (a * s).sum_to_size(a.shape)
        rb = (b * s).sum_to_size(b.shape)
        return ra, rb, None


def linear_apply(module: nn.Module, x: torch.Tensor, weight, bias) -> torch.Tensor:
    """``module``'s linear map with replaced parameters (Conv2d or Linear)."""
    if isinstance(module, nn.Conv2d):
        return module._conv_forward(x, weight, bias)
    return F.linear(x, weight, bias)


def epsilon_relevance(fn: Callable[[torch.Tensor], torch.Tensor], eps: float) -> Callable:
    """Generic epsilon rule for any linear ``fn``: ``x * J^T (R / stab(fn(x)))``."""

    def relevance(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        x = x.requires_grad_(True)
        z = fn(x)
        (c,) = torch.autograd.grad(z, x, r / stabilize(z, eps))
        return x.detach() * c

    return relevance


def input_gradient(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, grad):
    """``J^T grad`` of ``module``'s linear map with ``weight`` (no bias) at ``x``.

    One transposed convolution (or matrix product) called directly; autograd
    is used only for convolutions with string padding or non-zero padding modes.
    """
    if isinstance(module, nn.Linear):
        return grad @ weight
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(linear_apply(module, xg, weight, None), xg, grad)
        return g
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, module.stride, module.padding, module.dilation,
        False, [0] * len(module.stride), module.groups, [True, False, False],
    )[0]  # fmt: skip


def alpha_beta_message(module: nn.Module, alpha: float, beta: float, eps: float) -> Callable:
    """Alpha-beta rule (Bach et al. 2015, eq. 60) in message form, ``R_a / a``;
    ``alpha=1, beta=0`` is z+.

    Relevance of a non-negative input is ``a * W+^T (R / z+)`` (and the ``W-``
    share for beta); for inputs of both signs, positive and negative inputs
    take the shares of the contributions they make, so the message is picked
    per element by the input's sign.
    """
    w = module.weight
    wp, wn = w.clamp(min=0), w.clamp(max=0)

    def share(xs, ws, r, sign):
        """``W^T (R / (x W + eps))`` summed over the (input, weight) pairs ``xs, ws``."""
        z = linear_apply(module, xs[0], ws[0], None)
        for x, v in zip(xs[1:], ws[1:], strict=True):
            z = z + linear_apply(module, x, v, None)
        s = r / z.add_(sign * eps)
        return [input_gradient(module, x, v, s) for x, v in zip(xs, ws, strict=True)]

    def message(x: torch.Tensor, r: torch.Tensor, nonneg: bool = False) -> torch.Tensor:
        """``nonneg``: the input is known to be >= 0 (a ReLU's output), no check needed."""
        x = x.detach()
        if nonneg or bool(x.amin() >= 0):  # after a ReLU: only a+ W+ (and a+ W-) contribute
            (out,) = share([x], [wp], r, 1.0)
            if beta:
                out = alpha * out - beta * share([x], [wn], r, -1.0)[0]
            return out
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        pos, neg = share([xp, xn], [wp, wn], r, 1.0)
        if beta:
            pos2, neg2 = share([xp, xn], [wn, wp], r, -1.0)
            pos, neg = alpha * pos - beta * pos2, alpha * neg - beta * neg2
        return torch.where(x > 0, pos, neg)

    return message


def times_input(message: Callable) -> Callable:
    """The relevance form of a message-form rule: ``R_x = x * message(x, R)``."""

    def relevance(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return x.detach() * message(x, r)

    return relevance


def zbox_relevance(module: nn.Module, low, high, eps: float) -> Callable:
    """z^B rule for inputs bounded by ``low <= x <= high`` (Montavon et al. 2017)."""
    w = module.weight
    wp, wn = w.clamp(min=0), w.clamp(max=0)

    def relevance(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        lo = torch.as_tensor(low, dtype=x.dtype, device=x.device).expand_as(x).clone()
        hi = torch.as_tensor(high, dtype=x.dtype, device=x.device).expand_as(x).clone()
        x, lo, hi = (t.requires_grad_(True) for t in (x, lo, hi))
        z = (
            linear_apply(module, x, w, None)
            - linear_apply(module, lo, wp, None)
            - linear_apply(module, hi, wn, None)
        )
        grads = torch.autograd.grad(z, (x, lo, hi), r / stabilize(z, eps))
        return sum(t.detach() * g for t, g in zip((x, lo, hi), grads, strict=True))

    return relevance


RULE_PATTERN = re.compile(r"^(epsilon|z\+|zb|alpha(\d+(?:\.\d+)?)-beta(\d+(?:\.\d+)?))$")


def parse_rule(rule: str) -> tuple[str, float, float]:
    """``"epsilon"``, ``"z+"``, ``"zb"`` or ``"alpha2-beta1"`` -> (kind, alpha, beta)."""
    match = RULE_PATTERN.match(rule) if isinstance(rule, str) else None
    if not match:
        raise InputError(
            f"unknown LRP rule {rule!r}; use 'epsilon', 'z+', 'zb' or 'alphaA-betaB' "
            "(e.g. 'alpha2-beta1', 'alpha1-beta0')"
        )
    if match.group(2):
        alpha, beta = float(match.group(2)), float(match.group(3))
        if abs(alpha - beta - 1) > 1e-9:
            raise InputError(f"alpha-beta rule needs alpha - beta = 1, got {rule!r}")
        return "alphabeta", alpha, beta
    if rule == "z+":
        return "alphabeta", 1.0, 0.0
    return rule, 0.0, 0.0

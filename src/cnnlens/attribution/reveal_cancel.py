"""DeepLIFT's RevealCancel rule (Shrikumar et al. 2017, "Learning Important Features
Through Propagating Activation Differences", section 3.5.3), for
:class:`~cnnlens.attribution.propagation.DeepLift` with ``rule="reveal-cancel"``.

The difference of a nonlinearity's input, ``Δx = x - x0``, is split into its
positive and negative contributions ``Δx+ + Δx-``; the output's difference is
split the same way (eqs. for ``Δy+``, ``Δy-`` in section 3.5.3)::

    Δy+ = 1/2 (f(x0 + Δx+) - f(x0)) + 1/2 (f(x0 + Δx- + Δx+) - f(x0 + Δx-))
    Δy- = 1/2 (f(x0 + Δx-) - f(x0)) + 1/2 (f(x0 + Δx+ + Δx-) - f(x0 + Δx+))

with multipliers ``m+ = Δy+ / Δx+`` and ``m- = Δy- / Δx-`` (0 where the part is
below 1e-10, where it contributes nothing). ``Δy+ + Δy- = Δy`` exactly, so
summation-to-delta holds as with Rescale.

The parts come from the linear rule (section 3.5.1): a linear layer ``z = sum_i w_i
h_i + b`` sends the term ``w_i Δh_i`` to ``Δz+`` when it is positive and to ``Δz-``
when negative (``Δh_i`` the input's whole difference), so ``Δz+ = W+ Δh+ + W- Δh-``,
and both parts of ``Δh_i`` share the multiplier of the part their term went to; an
input with ``Δh_i = 0`` has multiplier ``w_i / 2`` to each part (the paper's note to
the linear rule). Between a linear layer and a nonlinearity the parts are carried:
an eval BatchNorm with scale ``a`` keeps them (``a > 0``) or swaps them (``a < 0``);
a sum adds the parts of its summands; routing and averaging (views, concatenation,
average pooling, means, dropout) apply to each part. A nonlinearity's or max pool's
output, and the network's input, enter a sum with the sign of their own difference
(a weight of 1). Where the parts are not known (after a layer norm, a product, a
scaling by a parameter), ``Δx+`` is the positive part of ``Δx`` itself, which makes
the rule Rescale at that nonlinearity.

In the backward pass only ``Δx+`` is a separate tensor ``p`` (``Δx- = Δx - p``
is implicit): the nonlinearity sends ``m- * g`` to ``x`` and ``(m+ - m-) * g``
to ``p``, and the linear layers' parts send their share back through the
signs of ``Δh``; contributions add up to ``m+ Δx+ + m- Δx-`` at every
nonlinearity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

EPS = 1e-10

LINEAR = {"conv1d", "conv2d", "conv3d", "linear"}
"""Layers given the linear rule (their input's reference is recorded)."""
ADD = {"add", "add_", "__add__", "__radd__", "__iadd__"}
SUB = {"sub", "sub_", "__sub__", "__isub__"}
SAME = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute",
    "transpose", "t", "contiguous", "clone", "__getitem__", "squeeze", "unsqueeze",
    "expand", "expand_as", "narrow", "select", "movedim", "flip", "roll", "repeat", "tile",
    "to", "float", "double", "type_as", "dropout", "dropout1d", "dropout2d", "alpha_dropout",
    "feature_alpha_dropout", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "mean", "sum", "split", "chunk", "unbind",
}  # fmt: skip
"""Routing and averaging: each part goes through the same operation."""
JOIN = {"cat", "concat", "concatenate", "stack"}


def positive(d: torch.Tensor) -> torch.Tensor:
    """``d`` where it is positive, else 0, as a linear map of ``d`` with a constant mask:
    1 where ``d > 0``, 1/2 where ``d = 0`` (section 3.5.1: an input with ``Δx_i = 0``
    sends half its weight to each part, so parts of it that cancel still get
    importance), 0 where ``d < 0``."""
    return d * (d.sign() + 1).mul_(0.5)


def negative(d: torch.Tensor) -> torch.Tensor:
    """The complement of :func:`positive`: ``positive(d) + negative(d) = d``."""
    return d * (1 - d.sign()).mul_(0.5)


class RevealCancel(torch.autograd.Function):
    """Elementwise nonlinearity ``f``: forward ``f(x)``; backward ``m- g`` to ``x`` and
    ``(m+ - m-) g`` to ``p = Δx+`` (section 3.5.3)."""

    @staticmethod
    def forward(ctx, x, p, x0, y0, f):
        n = (x - x0) - p
        y = f(x)
        fp, fn = f(x0 + p), f(x0 + n)
        up = 0.5 * ((fp - y0) + (y - fn))
        down = 0.5 * ((fn - y0) + (y - fp))
        m_pos = torch.where(p.abs() < EPS, 0.0, up / p)
        m_neg = torch.where(n.abs() < EPS, 0.0, down / n)
        ctx.save_for_backward(m_pos, m_neg)
        return y

    @staticmethod
    def backward(ctx, grad):
        m_pos, m_neg = ctx.saved_tensors
        return grad * m_neg, grad * (m_pos - m_neg), None, None, None


def linear_part(func: Callable, args: tuple, kwargs: dict, x: torch.Tensor, x0: torch.Tensor):
    """``Δz+ = W+ Δh+ + W- Δh-`` of ``conv*`` / ``linear`` (no bias: its difference is 0)."""
    names = ("input", "weight", "bias")
    given = dict(zip(names, args, strict=False)) | {k: v for k, v in kwargs.items() if k in names}
    rest = {k: v for k, v in kwargs.items() if k not in names}
    w = given["weight"].detach()
    d = x - x0

    def apply(h, weight):
        return func(h, weight, None, *args[3:], **rest)

    return apply(positive(d), w.clamp(min=0)) + apply(negative(d), w.clamp(max=0))


def batch_norm_part(args: tuple, kwargs: dict, d: torch.Tensor, p: torch.Tensor):
    """Eval BatchNorm scales channel ``c`` by ``a_c``: ``Δz+ = a+ Δx+ + a- Δx-``."""
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum",
             "eps")  # fmt: skip
    given = dict(zip(names, args, strict=False)) | kwargs
    a = (given["running_var"] + float(given.get("eps", 1e-5))).rsqrt()
    if given.get("weight") is not None:
        a = a * given["weight"].detach()
    a = a.view(1, -1, *([1] * (d.dim() - 2)))
    return a.clamp(min=0) * p + a.clamp(max=0) * (d - p)


def join_part(func: Callable, args: tuple, kwargs: dict, part: Callable):
    """Concatenation: the parts of the pieces (0 for a constant piece), or None."""
    pieces: Sequence = args[0] if args else kwargs["tensors"]
    parts = []
    for t in pieces:
        if not t.requires_grad:
            parts.append(torch.zeros_like(t))
            continue
        q = part(t)
        if q is None:
            return None
        parts.append(q)
    rest = {k: v for k, v in kwargs.items() if k != "tensors"}
    return func(parts, *args[1:], **rest)

"""DeepLIFT with the Rescale rule (Shrikumar et al. 2017, section 3.3), or RevealCancel
(section 3.5.3, ``rule="reveal-cancel"``, :mod:`.reveal_cancel`).

The reference ``x0`` runs first (once, at batch 1, when all images share
it); then the input runs forward and backward once. Both passes run under
:class:`_DeepLiftMode`, a :class:`~torch.overrides.TorchFunctionMode` that sees
every operation by its function, whether a module, a reused module or a
plain ``F.relu`` in ``forward`` calls it. The reference pass records the
operands of each nonlinear call in order; the input pass gives the same call
its rule against them. Every rule is a multiplier ``m`` with
``m * (x - x0) = y - y0`` exactly, so summation-to-delta holds,
``sum(attr) = S(x) - S(x0)``:

* elementwise activations (ReLU, ReLU6, SiLU, GELU, sigmoid, ...): Rescale,
  ``(f(x) - f(x0)) / (x - x0)``, the slope where ``|x - x0| < 1e-10`` (section 3.3;
  it needs no piecewise linearity);
* max pooling: Captum's max-pool rule (section 3.5.3), :func:`_maxpool_multiplier`;
* the product of two input-dependent tensors (the squeeze-excitation gate
  ``g * x``): the symmetric split ``Δ(gx) = ḡ Δx + x̄ Δg`` with ``ḡ, x̄`` the means
  of input and reference values, the two-player Shapley value of the
  product (exact);
* ``layer_norm``: the centring is linear; the scaling by ``1 / std`` gets
  Rescale on the centred values, ``(n(x) - n(x0)) / (c - c0)`` with each side's
  own statistics (exact; ``1 / std`` where ``|c - c0| < 1e-10``);
* linear and routing operations (convolutions, BatchNorm in eval, sums,
  pooling by averages, views, permutes, concatenation, dropout in eval)
  keep their gradient, which is exact for them.

Any other operation carrying the input (``exp``, ``softmax``, a division by
an input-dependent tensor, ``max`` over a dimension, ...) raises a
:class:`LayerError` naming it. As a safety net, the residual of
summation-to-delta is checked on every batch and a violation raises instead
of returning the map (``extras["delta"]`` holds the residual per image).
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..chunking import run_chunked
from ..errors import InputError, LayerError
from ..layers import structure_key
from ..nets.checks import FUNCTION_NAMES
from ..params import Param
from ..types import Explanation
from . import register
from . import reveal_cancel as rc
from .base import AT_LAYER, BASELINE, BATCH_SIZE, MEMORY, SEED
from .common import Configured, spatial, stored_layer, sum_channels, target_scores, to_input_size
from .gradient import make_baseline, shared_baseline
from .modified_backward import require_same_outputs

EPS = 1e-10
DELTA_RTOL = 1e-3
"""Summation-to-delta must hold to this share of ``max(|S(x) - S(x0)|, sum |attr| / 100)``."""

_MUL = {"mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply"}
_DIV = {"div", "div_", "__truediv__", "__rtruediv__", "__itruediv__", "true_divide"}
_MAXPOOL = {"max_pool2d", "max_pool2d_with_indices"}
_PRODUCTS = {"matmul", "__matmul__", "bmm", "einsum", "mm"}  # linear if one operand varies
_EXACT = {
    # linear maps (in the varying operand) and routing: their gradient is exact
    "add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__",
    "__isub__", "neg", "__neg__", "sum", "mean", "linear", "conv1d", "conv2d", "conv3d",
    "conv_transpose2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "interpolate", "upsample", "pad", "batch_norm", "dropout",
    "dropout1d", "dropout2d", "alpha_dropout", "feature_alpha_dropout", "view", "view_as",
    "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose", "t", "__getitem__",
    "__setitem__", "cat", "concat", "concatenate", "stack", "contiguous", "clone", "squeeze",
    "unsqueeze", "expand", "expand_as", "split", "chunk", "narrow", "select", "to", "float",
    "double", "type_as", "unbind", "roll", "flip", "repeat", "tile", "identity", "movedim",
    "pixel_shuffle", "channel_shuffle", "detach", "requires_grad_", "__get__", "zero_pad2d",
    *_MUL, *_DIV, *_PRODUCTS,
}  # fmt: skip


def _base(name: str) -> str:
    return name[:-1] if name.endswith("_") and not name.startswith("_") else name


def _out_of_place(func, name: str, args: tuple, kwargs: dict):
    """``func`` as a function of its first argument, never in place (the rule keeps
    the input for the multiplier; :func:`_check_forward` verifies the model did not
    rely on the in-place side effect)."""
    base = _base(name)
    if base != name:  # torch.relu_ / x.sigmoid_(): the out-of-place function
        func = getattr(torch, base, None) or getattr(F, base)
    rest = tuple(False if isinstance(a, bool) else a for a in args[1:])
    kw = {k: (False if k == "inplace" else v) for k, v in kwargs.items()}
    return lambda v: func(v, *rest, **kw)


class _Rescale(torch.autograd.Function):
    """Elementwise activation: forward ``f(x)``; backward ``grad * m``, Rescale's multiplier."""

    @staticmethod
    def forward(ctx, x, x0, y0, f):
        y = f(x)
        dx = x - x0
        m = (y - y0).div_(dx)
        small = dx.abs_() < EPS
        if bool(small.any()):
            with torch.enable_grad():
                xd = x.detach().requires_grad_(True)
                (slope,) = torch.autograd.grad(f(xd).sum(), xd)
            m = torch.where(small, slope, m)
        ctx.save_for_backward(m)
        return y

    @staticmethod
    def backward(ctx, grad):
        (m,) = ctx.saved_tensors
        return grad * m, None, None, None


def _maxpool_multiplier(grad, x_shape, dx, y, y0, index, index0) -> torch.Tensor:
    """Max pooling (section 3.5.3; Captum's rule), gradient times multiplier.

    Output ``o`` changes by ``y_o - y0_o``. With ``t = max(y_o, y0_o)`` the part
    ``t - y0_o`` is sent to the input's argmax and ``y_o - t`` to the
    reference's argmax (scatter-added, so overlapping windows sum), then
    divided by ``x - x0``; the plain pooling gradient where ``|x - x0| < 1e-10``.
    Summation-to-delta holds across the layer.
    """
    top = torch.maximum(y, y0)

    def unpool(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        flat = values.new_zeros(*x_shape[:2], x_shape[2] * x_shape[3])
        return flat.scatter_add_(2, where.flatten(2), values.flatten(2)).view(x_shape)

    moved = unpool(grad * (top - y0), index) + unpool(grad * (y - top), index0)
    return torch.where(dx.abs() < EPS, unpool(grad, index), moved / dx)


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, x0, kw):
        y, index = F.max_pool2d(x, **kw, return_indices=True)
        y0, index0 = F.max_pool2d(x0, **kw, return_indices=True)
        y0, index0 = y0.expand_as(y), index0.expand_as(index)  # a shared reference
        ctx.shape = x.shape
        ctx.save_for_backward(x - x0, y, y0, index, index0)
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        return _maxpool_multiplier(grad, ctx.shape, *ctx.saved_tensors), None, None


class _Product(torch.autograd.Function):
    """``a * b`` with the symmetric split: ``Δ(ab) = mean(b, b0) Δa + mean(a, a0) Δb``."""

    @staticmethod
    def forward(ctx, a, b, a0, b0):
        ctx.shapes = a.shape, b.shape
        ctx.save_for_backward((b + b0).mul_(0.5), (a + a0).mul_(0.5))
        return a * b

    @staticmethod
    def backward(ctx, grad):
        mb, ma = ctx.saved_tensors  # multipliers of a and of b
        sa, sb = ctx.shapes
        return (grad * mb).sum_to_size(sa), (grad * ma).sum_to_size(sb), None, None


class _LayerNorm(torch.autograd.Function):
    """``layer_norm`` with Rescale on the normalisation of the centred values."""

    @staticmethod
    def forward(ctx, x, x0, shape, weight, bias, eps):
        dims = tuple(range(-len(shape), 0))

        def centre_scale(v):
            c = v - v.mean(dims, keepdim=True)
            return c, (c.square().mean(dims, keepdim=True) + eps).rsqrt()

        c, r = centre_scale(x)
        c0, r0 = centre_scale(x0)
        dc = c - c0
        m = torch.where(dc.abs() < EPS, r, (c * r - c0 * r0) / dc)
        if weight is not None:
            m = m * weight
        ctx.dims = dims
        ctx.save_for_backward(m)
        return F.layer_norm(x, shape, weight, bias, eps)

    @staticmethod
    def backward(ctx, grad):
        (m,) = ctx.saved_tensors
        g = grad * m
        return g - g.mean(ctx.dims, keepdim=True), None, None, None, None, None


def _layer_norm_args(args: tuple, kwargs: dict) -> tuple:
    names = ("input", "normalized_shape", "weight", "bias", "eps")
    given = dict(zip(names, args, strict=False)) | kwargs
    return (tuple(given["normalized_shape"]), given.get("weight"), given.get("bias"),
            float(given.get("eps", 1e-5)))  # fmt: skip


def _maxpool_args(args: tuple, kwargs: dict) -> dict:
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
    given = dict(zip(names, args, strict=False)) | kwargs
    given.pop("input", None)
    given.pop("return_indices", None)
    return given


def _kind(name: str, args: tuple, reveal: bool = False) -> str | None:
    """Which rule a call needs, from its name and argument types only (the same in
    both passes): ``act``, ``maxpool``, ``layernorm``, ``mul`` or ``div``; with
    RevealCancel also ``linear`` and ``batchnorm`` (their input's reference is kept)."""
    if _base(name) in FUNCTION_NAMES:
        return "act"
    if reveal and name in rc.LINEAR:
        return "linear"
    if reveal and name == "batch_norm":
        return "batchnorm"
    if name in _MAXPOOL:
        return "maxpool"
    if name == "layer_norm":
        return "layernorm"
    two = len(args) >= 2 and all(isinstance(a, torch.Tensor) for a in args[:2])
    if two and name in _MUL:
        return "mul"
    if two and name in _DIV:
        return "div"
    return None


class _DeepLiftMode(TorchFunctionMode):
    """Records the reference's nonlinear calls (``calls`` is None) or applies the
    rules against them, call by call, in the same order."""

    def __init__(self, calls: list | None = None, rule: str = "rescale") -> None:
        super().__init__()
        self.record = calls is None
        self.calls: list = [] if calls is None else calls
        self.next = 0
        self.reveal = rule == "reveal-cancel"
        self.parts: dict[int, tuple] = {}  # RevealCancel: id -> (tensor, its Δ+)

    def __exit__(self, *exc):
        self.parts.clear()
        return super().__exit__(*exc)

    def track(self, t: torch.Tensor, p: torch.Tensor) -> None:
        """RevealCancel: ``p`` is the positive part of ``t``'s difference."""
        self.parts[id(t)] = (t, p)

    def part(self, t: torch.Tensor) -> torch.Tensor | None:
        entry = self.parts.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else None

    def _reference(self, name: str):
        if self.next >= len(self.calls):
            raise LayerError(
                f"DeepLIFT: {name!r} ran more often for the input than for the reference; "
                "the forward pass must not depend on the input's values"
            )
        ref = self.calls[self.next]
        self.next += 1
        return ref

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        kind = _kind(name, args, self.reveal)
        if kind is None:
            out = func(*args, **kwargs)
            if not self.record and name not in _EXACT:
                _refuse_if_carried(name, args, kwargs, out)
            elif not self.record and name in _PRODUCTS:
                if sum(isinstance(a, torch.Tensor) and a.requires_grad for a in args) > 1:
                    _refuse(name, "a product of two input-dependent tensors")
            if self.reveal and not self.record:
                self._carry(func, name, args, kwargs, out)
            return out
        if kind in ("mul", "div"):
            out = self._binary(func, name, kind, args, kwargs)
            self.parts.pop(id(out), None)  # an in-place product: its parts are unknown
            return out
        x = args[0] if args else kwargs["input"]
        if kind in ("linear", "batchnorm"):
            return self._linear(func, name, kind, x, args, kwargs)
        if self.record:
            if kind == "act":
                y = _out_of_place(func, name, args, kwargs)(x)
                self.calls.append(
                    (x.detach().clone(), y.detach().clone())
                )  # the model may change y
                return y
            self.calls.append(x.detach().clone())
            return func(*args, **kwargs)
        ref = self._reference(name)
        if not x.requires_grad:  # does not depend on the input: the plain op
            return func(*args, **kwargs)
        if kind == "act":
            f = _out_of_place(func, name, args, kwargs)
            if not self.reveal:
                return _Rescale.apply(x, *ref, f)
            x0, y0 = ref
            p = self.part(x)
            y = rc.RevealCancel.apply(x, rc.positive(x - x0) if p is None else p, x0, y0, f)
            self.track(y, rc.positive(y - y0))
            return y
        if kind == "maxpool":
            if kwargs.get("return_indices") or (len(args) > 6 and args[6]):
                _refuse(name, "max pooling that returns indices")
            kw = _maxpool_args(args, kwargs)
            y = _MaxPool.apply(x, ref, kw)
            if self.reveal:
                self.track(y, rc.positive(y - F.max_pool2d(ref, **kw)))
            return y
        return _LayerNorm.apply(x, ref, *_layer_norm_args(args, kwargs))

    def _linear(self, func, name: str, kind: str, x, args: tuple, kwargs: dict):
        """RevealCancel's linear rule (``linear``) or carried parts (``batchnorm``)."""
        if self.record:
            self.calls.append(x.detach().clone())
            return func(*args, **kwargs)
        x0 = self._reference(name)
        out = func(*args, **kwargs)
        self.parts.pop(id(out), None)
        if x.requires_grad:
            if kind == "linear":
                self.track(out, rc.linear_part(func, args, kwargs, x, x0))
            else:
                d = x - x0
                p = self.part(x)
                self.track(
                    out, rc.batch_norm_part(args, kwargs, d, rc.positive(d) if p is None else p)
                )
        return out

    def _carry(self, func, name: str, args: tuple, kwargs: dict, out) -> None:
        """RevealCancel: the parts of ``out`` from its operands' (see :mod:`.reveal_cancel`)."""
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if not all(isinstance(o, torch.Tensor) for o in outs):
            return
        varying = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        p = None
        if name in rc.JOIN:
            p = rc.join_part(func, args, kwargs, self.part)
        elif name in rc.ADD and len(args) >= 2 and not kwargs and varying:
            given = [self.part(a) for a in varying]
            if all(q is not None for q in given):
                p = given[0] if len(given) == 1 else given[0] + given[1]
        elif name in rc.SUB and len(varying) == 1 and varying[0] is args[0] and not kwargs:
            p = self.part(args[0])
        elif name in rc.SAME and len(varying) == 1 and varying[0] is args[0]:
            q = self.part(args[0])
            p = None if q is None else func(q, *args[1:], **kwargs)
        for o in outs:
            self.parts.pop(id(o), None)  # an in-place change makes an old part stale
        if p is None:
            return
        for o, q in zip(outs, p if isinstance(p, (tuple, list)) else (p,), strict=True):
            if o.requires_grad:
                self.track(o, q.expand(o.shape) if q.shape != o.shape else q)

    def _binary(self, func, name, kind, args, kwargs):
        a, b = args[0], args[1]
        inplace = name.startswith("__i") or name.endswith("_")
        plain = getattr(torch, "mul" if kind == "mul" else "div")
        if self.record:
            self.calls.append((a.detach().clone(), b.detach().clone()))
            return plain(a, b, *args[2:], **kwargs) if inplace else func(*args, **kwargs)
        a0, b0 = self._reference(name)
        if kind == "mul" and a.requires_grad and b.requires_grad:
            return _Product.apply(a, b, a0, b0)
        if kind == "div" and b.requires_grad:
            _refuse(name, "a division by an input-dependent tensor")
        return plain(a, b, *args[2:], **kwargs) if inplace else func(*args, **kwargs)


def _refuse(name: str, what: str) -> None:
    raise LayerError(
        f"DeepLIFT has no rule for {what} ({name!r}); summation-to-delta would fail and the "
        "map would be wrong. Replace the operation, or use integrated-gradients"
    )


def _refuse_if_carried(name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Refuse an operation outside the known rules when it carries the input."""
    if not (isinstance(out, torch.Tensor) and out.requires_grad):
        return
    carried = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    if any(a.requires_grad for a in carried):
        _refuse(name, f"the operation {name!r}")


_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _check_forward(model: nn.Module, probe: torch.Tensor) -> None:
    """The rules compute activations out of place; the model's outputs must not
    change (a forward relying on an in-place side effect would). Cached per model."""
    key = structure_key(model, probe)
    if _CHECKED.get(model) == key:
        return
    with torch.no_grad():
        expected = model(probe)
        with _DeepLiftMode():
            got = model(probe)
    require_same_outputs(expected, got, "deeplift")
    _CHECKED[model] = key


def reference_pass(model: nn.Module, x0: torch.Tensor, at: str | None, rule: str = "rescale"):
    """One forward of the reference without gradients: (recorded calls, logits, layer)."""
    mode = _DeepLiftMode(rule=rule)
    with torch.no_grad(), mode:
        if at is None:
            return mode.calls, model(x0), None
        with stored_layer(model, at) as store:
            logits = model(x0)
    return mode.calls, logits, store["out"].detach()


def check_delta(delta: torch.Tensor, expected: torch.Tensor, raw: torch.Tensor) -> None:
    """The safety net: raise when summation-to-delta fails (a rule is missing or wrong)."""
    scale = torch.maximum(expected.abs(), raw.flatten(1).abs().sum(1) / 100)
    bad = delta.abs() > DELTA_RTOL * scale + 1e-6
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        share = float(delta[i].abs() / expected[i].abs().clamp_min(1e-12))
        raise LayerError(
            f"DeepLIFT: summation-to-delta fails on image {i} (residual {float(delta[i]):.3g}, "
            f"{share:.0%} of S(x) - S(x0)); an operation of this model has no exact rule. "
            "Use integrated-gradients"
        )


@register
class DeepLift(Configured):
    """DeepLIFT, Rescale or (``rule="reveal-cancel"``) RevealCancel at nonlinearities;
    ``baseline`` as Integrated Gradients (default zeros).

    The reference runs first, without gradients, recording every nonlinear
    call's operands; a baseline shared by all images (the default zeros)
    runs once at batch 1 and is broadcast. The input then needs one forward +
    backward, so DeepLIFT costs about one gradient pass.
    """

    name = "deeplift"
    description = "DeepLIFT (Rescale or RevealCancel rule) against a baseline (default zeros)"
    family = "Propagation"
    complete = True

    @classmethod
    def passes(cls, params):
        if params.get("rule") == "reveal-cancel":  # each linear layer runs three times
            return 3.5
        return 1.5  # the reference's forward, then one forward + backward

    hyperparameters: ClassVar[dict[str, Param]] = {
        "baseline": BASELINE,
        "rule": Param(
            "str",
            "rescale",
            choices=("rescale", "reveal-cancel"),
            help="Rescale (section 3.3) or RevealCancel (section 3.5.3) at nonlinearities",
        ),
        "at": AT_LAYER,
        "seed": SEED,
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }
    fused_target = True

    def attribute(self, inputs, target, logits) -> Explanation:
        at = self.hp["at"] if self.hp["at"] is None else self.layer_name(inputs, "at")
        rule = self.hp["rule"]
        if rule == "reveal-cancel" and at is not None:
            raise InputError(
                "DeepLIFT's reveal-cancel rule attributes to the input only; drop at= "
                "or use rule='rescale' for a layer"
            )
        base = make_baseline(inputs, self.hp["baseline"], self.hp["seed"])
        _check_forward(self.model, inputs[:1])
        shared = shared_baseline(base)
        common = reference_pass(self.model, shared, at, rule) if shared is not None else None

        def run(lo: int, hi: int):
            calls, ref_logits, ref_layer = common or reference_pass(
                self.model, base[lo:hi], at, rule
            )
            x = inputs[lo:hi].detach()
            mode = _DeepLiftMode(calls, rule)
            if at is None:
                x.requires_grad_(True)
                if mode.reveal:  # the input enters a sum with the sign of its difference
                    mode.track(x, rc.positive(x - base[lo:hi]))
                with mode:
                    out = self.model(x)
                a, a0 = x, base[lo:hi]
            else:
                with stored_layer(self.model, at) as store, mode:
                    out = self.model(x)
                a, a0 = store["out"], ref_layer
                spatial(at, a)
            t = self.chunk_targets(out, target, lo, hi)
            score = target_scores(out, t)
            (g,) = torch.autograd.grad(score.sum(), a)
            expected = score.detach() - target_scores(ref_logits.expand(hi - lo, -1), t)
            return (a.detach() - a0) * g, t, expected

        raw, target, expected = run_chunked(run, len(inputs), self.chunk(inputs))
        maps = to_input_size(sum_channels(raw), tuple(inputs.shape[-2:]))
        delta = raw.flatten(1).sum(1) - expected
        check_delta(delta, expected, raw)
        return self.explanation(maps, target, raw=raw, delta=delta)

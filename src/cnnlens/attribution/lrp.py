"""Layer-wise Relevance Propagation with rules and named composites.

LRP runs on a copy of the model with BatchNorm folded into the preceding
convolution (:func:`fold_batchnorm`), so the user's model is never changed.
Each ``Conv2d`` / ``Linear`` gets a rule from the composite; average pools
and unfolded BatchNorms the epsilon rule; non-ReLU activation modules pass
relevance unchanged. Operations outside modules are watched by a
:class:`~cnnlens.tracing.CallWatch` during the forward:

* a sum of two tensors (the residual add of a ResNet) splits relevance in
  proportion to the summands (so skip connections conserve relevance);
* functional linear maps (``mean``, ``sum``, ``F.conv2d``, scaling by a
  constant, bilinear upsampling, ...) get the epsilon rule;
* index/shape operations, max pooling and ``F.relu`` route relevance as the
  gradient does, which is exact for them;
* anything else that carries relevance (a product of two activations, a
  functional sigmoid) raises a :class:`LayerError` naming the operation.

On ReLU networks the backward signal is the *message* ``R / a`` (see
:mod:`.lrp_rules`): the epsilon rule is then one fused elementwise factor at
each linear output, with no recomputation and no multiplication by the input
until the end. The z^B rule and activations that pass relevance unchanged
need the relevance form, which is used for the whole model when present.

Named composites (Kohlbrenner et al. 2020; Zennit's names):

=======================  =========================================================
``epsilon``              epsilon everywhere
``epsilon-plus``         z+ for convolutions, epsilon for linear layers (default)
``epsilon-plus-zb``      as epsilon-plus, z^B for the first convolution
``epsilon-alpha2-beta1`` alpha2-beta1 for convolutions, epsilon for linear layers
``epsilon-alpha2-beta1-zb``  as above, z^B for the first convolution
``alpha1-beta0``         alpha1-beta0 for convolutions and linear layers
=======================  =========================================================

A composite may also be a dict from layer names, ``"first"`` (the first
convolution) or module types (``nn.Conv2d``, ``nn.Linear``) to rule names.
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import Any, ClassVar

import torch
from torch import nn

from ..accel import channels_last_if_same, fold_batchnorm
from ..chunking import run_chunked
from ..errors import InputError, LayerError
from ..hooks import HookSet
from ..layers import cached_per_model, get_layer
from ..nets.checks import ACTIVATIONS, FUNCTION_NAMES
from ..params import Param
from ..tracing import CallWatch, base_name
from ..types import Explanation
from . import register
from .base import AT_LAYER, BATCH_SIZE, MEMORY
from .common import Configured, spatial, stored_layer, sum_channels, target_scores, to_input_size
from .lrp_rules import (
    DivideStabilized,
    MaskSignal,
    Pass,
    ProportionalAdd,
    Recompute,
    RecomputeMessage,
    Stabilised,
    TimesInput,
    _out,
    alpha_beta_message,
    epsilon_relevance,
    parse_rule,
    stabilize,
    times_input,
    zbox_relevance,
)
from .modified_backward import require_same_outputs, with_copies_if_refused

_FOLDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_NEEDS_COPY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # folded model -> bool

COMPOSITES: dict[str, dict[Any, str]] = {
    "epsilon": {nn.Conv2d: "epsilon", nn.Linear: "epsilon"},
    "epsilon-plus": {nn.Conv2d: "z+", nn.Linear: "epsilon"},
    "epsilon-plus-zb": {"first": "zb", nn.Conv2d: "z+", nn.Linear: "epsilon"},
    "epsilon-alpha2-beta1": {nn.Conv2d: "alpha2-beta1", nn.Linear: "epsilon"},
    "epsilon-alpha2-beta1-zb": {"first": "zb", nn.Conv2d: "alpha2-beta1", nn.Linear: "epsilon"},
    "alpha1-beta0": {nn.Conv2d: "alpha1-beta0", nn.Linear: "alpha1-beta0"},
}

_ADD = {"add", "__add__", "__radd__", "__iadd__", "add_"}
_LINEAR = {
    "mean", "sum", "avg_pool2d", "adaptive_avg_pool2d", "avg_pool1d", "linear", "conv2d",
    "matmul", "__matmul__", "mul", "__mul__", "__rmul__", "__imul__", "div", "__truediv__",
    "__itruediv__", "sub", "__sub__", "__rsub__", "__isub__", "interpolate", "upsample",
    "neg", "__neg__", "add", "__add__", "__radd__", "__iadd__", "einsum", "batch_norm",
}  # fmt: skip
_ROUTE = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose",
    "t", "__getitem__", "pad", "cat", "concat", "concatenate", "stack", "contiguous", "clone",
    "squeeze", "unsqueeze", "expand", "expand_as", "split", "chunk", "narrow", "select",
    "max_pool2d", "max_pool2d_with_indices", "adaptive_max_pool2d", "max_pool1d", "dropout",
    "to", "float", "type_as", "relu", "relu_", "detach", "requires_grad_", "__setitem__",
    "unbind", "roll", "flip", "amax", "max", "__get__", "dropout2d", "repeat", "tile",
    "identity",
}  # fmt: skip
_NONNEG = {"relu", "relu_"}
_KEEPS_SIGN = {
    "view", "reshape", "flatten", "max_pool2d", "adaptive_max_pool2d", "dropout", "contiguous",
    "clone", "__getitem__", "unsqueeze", "squeeze", "dropout2d", "to", "float",
}  # fmt: skip


def _needs(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad


class _Watch(CallWatch):
    """Gives operations outside rule-carrying modules their LRP treatment, in the
    message or the relevance form (:mod:`.lrp_rules`)."""

    def __init__(self, eps: float, message: bool, copy: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.message = message
        self.copy = copy
        self.nonneg: dict[int, torch.Tensor] = {}  # tensors known >= 0, kept alive by id

    def __exit__(self, *exc):
        self.nonneg.clear()  # sign knowledge is per forward (and keeps tensors alive)
        return super().__exit__(*exc)

    def _track_sign(self, name: str, x: torch.Tensor, out: object) -> None:
        """Remember outputs known to be >= 0 (ReLU outputs, and views or max pools
        of them), so the z+ rule can skip its sign check; in-place ops forget."""
        if name not in _NONNEG and (name.startswith("__i") or name.endswith("_")):
            self.nonneg.pop(id(x), None)
        elif isinstance(out, torch.Tensor) and (
            name in _NONNEG or (name in _KEEPS_SIGN and id(x) in self.nonneg)
        ):
            self.nonneg[id(out)] = out

    def call(self, func, name, args, kwargs):
        grads = [a for a in args if _needs(a)]
        if not grads:
            grads = [v for v in kwargs.values() if _needs(v)]
        if name in _GATED and len(grads) == 2 and len(args) == 2 and not kwargs:
            args = _gate_as_constant(name, *args)  # a gate x * g: g is a constant
            grads = [a for a in args if _needs(a)]
        if name == "layer_norm" and grads and grads[0] is args[0]:
            return self._layer_norm(args, kwargs)
        if name in _ADD and len(grads) == 2 and len(args) >= 2 and not kwargs:
            if self.message:  # the proportional split is the epsilon factor at the sum
                return Stabilised.apply(torch.add(args[0], args[1]), self.eps, self.copy)
            return ProportionalAdd.apply(args[0], args[1], self.eps)
        out = func(*args, **kwargs)
        if grads:
            self._track_sign(name, grads[0], out)
        if not grads or not _needs(out) or name in _ROUTE:
            return out
        if name in _LINEAR and len(grads) == 1 and not isinstance(out, (tuple, list)):
            if self.message:
                return Stabilised.apply(out, self.eps, self.copy)
            x = grads[0]
            index = next((i for i, a in enumerate(args) if a is x), None)
            if index is None:
                raise LayerError(f"LRP: cannot apply a rule to {name} called with keywords")

            def fn(v, index=index):
                new = list(args)
                new[index] = v
                return func(*new, **kwargs)

            return Recompute.apply(x, out.detach(), epsilon_relevance(fn, self.eps), self.copy)
        base, _in_place = base_name(name)
        what = "activation function" if base in FUNCTION_NAMES else "operation"
        raise LayerError(
            f"LRP has no rule for the {what} {name!r} applied outside a module "
            f"({len(grads)} input(s) carrying relevance); use a module with a known rule, "
            "or a gradient method"
        )

    def _layer_norm(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The LN rule of Ali et al. 2022 (ICML, "XAI for Transformers: Better Explanations
        through Conservative Propagation", section 3.3): the normalising statistic
        ``1 / std`` is a constant in the backward pass, so the layer is the linear map
        ``v -> (v - mean v) / std * w + b`` and gets the epsilon rule. The centring
        conserves relevance, so only the bias ``b`` (and epsilon) absorb any."""
        x = args[0]
        shape, weight, bias, eps = _layer_norm_args(args, kwargs)
        dims = tuple(range(-len(shape), 0))
        with torch.no_grad():
            scale = (x.var(dims, unbiased=False, keepdim=True) + eps).rsqrt()

        def fn(v: torch.Tensor) -> torch.Tensor:
            y = (v - v.mean(dims, keepdim=True)) * scale
            y = y if weight is None else y * weight
            return y if bias is None else y + bias

        if self.message:
            return Stabilised.apply(fn(x), self.eps, self.copy)
        with torch.no_grad():
            out = fn(x)
        return Recompute.apply(x, out, epsilon_relevance(fn, self.eps), self.copy)


def _layer_norm_args(args: tuple, kwargs: dict) -> tuple:
    names = ("input", "normalized_shape", "weight", "bias", "eps")
    given = dict(zip(names, args, strict=False)) | kwargs
    return (tuple(given["normalized_shape"]), given.get("weight"), given.get("bias"),
            float(given.get("eps", 1e-5)))  # fmt: skip


def _gate_as_constant(name: str, a: torch.Tensor, b: torch.Tensor) -> tuple:
    """``x * g`` where the gate ``g`` broadcasts over ``x`` (squeeze-excitation's
    ``[N,C,1,1]`` channel gate): the gate is a constant and the signal takes all the
    relevance (Arras et al. 2017, "Explaining Recurrent Neural Network Predictions in
    Sentiment Analysis", section 3; Zennit's practice for gates), which conserves it.
    A product of two same-shaped activations has no such reading and is refused."""
    if a.numel() != b.numel():
        small, large = (a, b) if a.numel() < b.numel() else (b, a)
        if torch.broadcast_shapes(small.shape, large.shape) == large.shape:
            return (a.detach(), b) if small is a else (a, b.detach())
    raise LayerError(
        f"LRP has no rule for {name!r} of two same-shaped tensors that both carry relevance "
        f"({tuple(a.shape)}, {tuple(b.shape)}); only a broadcast gate (x * g with g of shape "
        "[N,C,1,1], squeeze-excitation) is treated as a constant. Use a gradient method"
    )


_GATED = {"mul", "__mul__", "__rmul__", "__imul__", "mul_"}


class _RuleAssignment:
    """Which rule each module of the (folded) model gets."""

    def __init__(self, model: nn.Module, composite: Any, rule: str | None, first: str) -> None:
        if rule is not None:
            parse_rule(rule)
            spec: dict[Any, str] = {nn.Conv2d: rule, nn.Linear: rule}
        elif isinstance(composite, str):
            if composite not in COMPOSITES:
                raise InputError(
                    f"unknown LRP composite {composite!r}; known: {', '.join(COMPOSITES)} "
                    "(or a dict from layer names / module types to rules)"
                )
            spec = COMPOSITES[composite]
        elif isinstance(composite, dict):
            spec = composite
        else:
            raise InputError(f"composite must be a name or a dict, got {composite!r}")
        names = dict(model.named_modules())
        for key, value in spec.items():
            parse_rule(value)
            if isinstance(key, str) and key != "first" and key not in names:
                raise LayerError(f"LRP composite names layer {key!r}, which the model lacks")
        self.by_module: dict[int, str] = {}
        for name, module in names.items():
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            chosen = spec.get(name)
            if chosen is None and name == first:
                chosen = spec.get("first")
            if chosen is None:
                chosen = next(
                    (r for k, r in spec.items() if isinstance(k, type) and isinstance(module, k)),
                    "epsilon",
                )
            self.by_module[id(module)] = chosen


_PASS = tuple(a for a in ACTIVATIONS if a is not nn.ReLU)
"""Activation modules that pass relevance unchanged (all but ReLU)."""


def _message_form(model: nn.Module, zb: bool) -> bool:
    """Whether every rule is proportional to its input, so the cheaper message
    form applies: no z^B rule and no activation module that passes relevance."""
    return not zb and not any(isinstance(m, _PASS) for m in model.modules())


def _first_conv(model: nn.Module, probe: torch.Tensor) -> str:
    order: list[str] = []
    with HookSet() as hooks:
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                hooks.forward(m, lambda _m, _i, _o, name=name: order.append(name))
        with torch.no_grad():
            model(probe)
    return order[0] if order else ""


class _BiasTap(torch.autograd.Function):
    """Identity at an affine output ``z = ... + b`` given the epsilon rule; its backward
    adds, per image, the relevance the bias absorbs, ``sum b * R_z / (z + eps sign z)``
    (Montavon et al. 2019, eq. 4 with the bias as a neuron), to ``shares[0]``."""

    @staticmethod
    def forward(ctx, z, bias, message, eps, shares, copy):
        ctx.save_for_backward(z, bias)
        ctx.message, ctx.eps, ctx.shares = message, eps, shares
        return _out(z, copy)

    @staticmethod
    def backward(ctx, grad):
        z, bias = ctx.saved_tensors
        r = z * grad if ctx.message else grad  # the relevance at z
        share = (bias * r / stabilize(z, ctx.eps)).flatten(1).sum(1)
        ctx.shares[0] = ctx.shares[0] + share
        return grad, None, None, None, None, None


def _bias_of(module: nn.Module, out: torch.Tensor) -> torch.Tensor | None:
    """The additive constant of an affine leaf module's output, shaped to broadcast
    over it (an unfolded eval BatchNorm's is ``b - mean * w / std``), or None."""
    bias = getattr(module, "bias", None)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.running_mean is None:
            return None
        scale = (module.running_var + module.eps).rsqrt()
        weight = 1.0 if module.weight is None else module.weight
        bias = (0.0 if bias is None else bias) - module.running_mean * scale * weight
    if not isinstance(bias, torch.Tensor) or not bool(bias.any()):
        return None
    bias = bias.detach()
    if isinstance(module, nn.Linear) or type(module) is nn.LayerNorm:
        return bias  # the last dimension
    return bias.view(1, -1, *([1] * (out.dim() - 2)))


CONSERVATION_RTOL = 1e-2
"""Where relevance must be conserved, ``|sum R - S_t(x)| <= 1e-2 |S_t(x)|`` or LRP raises."""


def _should_conserve(model: nn.Module, eps: float) -> bool:
    """Every rule here conserves relevance when no layer has a bias (BatchNorm folded
    included) and epsilon is small (Montavon et al. 2019, section 10.2.3). Biases
    absorb relevance by design: with them the check counts their share
    (``extras["bias_share"]``, :class:`_BiasTap`)."""
    if eps > 1e-4:
        return False
    biases = (getattr(m, "bias", None) for m in model.modules() if not list(m.children()))
    return not any(isinstance(b, torch.Tensor) and bool(b.any()) for b in biases)


def check_conservation(
    total: torch.Tensor, scores: torch.Tensor, eps: float, bias_share: torch.Tensor | None = None
) -> None:
    """The safety net: raise when relevance is not conserved where it must be. With
    biases the check is ``sum R + bias share = S_t(x)``: the relevance the biases
    absorb (:class:`_BiasTap`) is counted, only epsilon's own share is not."""
    kept = total if bias_share is None else total + bias_share
    bad = ((kept - scores).abs() > CONSERVATION_RTOL * scores.abs()) & (scores.abs() > 1e4 * eps)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        lost = float((kept[i] - scores[i]).abs() / scores[i].abs())
        where = "in a bias-free model" if bias_share is None else "counting the biases' share"
        raise LayerError(
            f"LRP: relevance is not conserved on image {i} ({lost:.1%} of S_t(x) lost "
            f"{where}); an operation of this model has no conserving rule. Try "
            "composite='epsilon', or use a gradient method"
        )


@register
class LRP(Configured):
    """LRP (Bach et al. 2015) with composites; relevance starts at the target logit."""

    name = "lrp"
    description = "layer-wise relevance propagation (composite epsilon-plus by default)"
    family = "Propagation"
    complete = True

    @classmethod
    def passes(cls, params):
        return 1.6  # measured: the rules' recomputation over a gradient pass

    hyperparameters: ClassVar[dict[str, Param]] = {
        "composite": Param("any", "epsilon-plus", help="a composite name or {layer: rule}"),
        "rule": Param("str", None, none=True, help="one rule for every layer"),
        "epsilon": Param("float", 1e-6, min=0),
        "low": Param("float|tensor", None, none=True, help="zB lower bound"),
        "high": Param("float|tensor", None, none=True, help="zB upper bound"),
        "at": AT_LAYER,
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }

    @classmethod
    def check_params(cls, params: Any, model: nn.Module | None = None) -> dict[str, Any]:
        """The declared checks, then the rule's syntax and the composite's name."""
        params = super().check_params(params, model)
        if params.get("rule") is not None:
            parse_rule(params["rule"])
        composite = params.get("composite", "epsilon-plus")
        if isinstance(composite, str) and composite not in COMPOSITES:
            raise InputError(
                f"unknown LRP composite {composite!r}; known: {', '.join(COMPOSITES)} "
                "(or a dict from layer names / module types to rules)"
            )
        return params

    fused_target = True

    def _hooks(self, hooks: HookSet, model: nn.Module, assign: _RuleAssignment, watch: _Watch,
               bounds: tuple | None) -> None:  # fmt: skip
        eps = float(self.hp["epsilon"])
        pooling = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm2d, nn.BatchNorm1d)

        def enter(_m, _inp):
            watch.depth += 1

        for module in model.modules():
            if list(module.children()):
                continue
            rule = assign.by_module.get(id(module))
            has_params = any(True for _ in module.parameters(recurse=False))
            if rule == "epsilon" or (rule is None and isinstance(module, pooling)):
                if watch.message:
                    continue  # its functional call gets the epsilon factor from the watch

                def pre(_m, inp):
                    watch.depth += 1
                    return (TimesInput.apply(inp[0], watch.copy), *inp[1:])

                def post(_m, _inp, out):
                    watch.depth -= 1
                    return DivideStabilized.apply(out, eps, watch.copy)

                hooks.forward_pre(module, pre)
                hooks.forward(module, post)
            elif rule is not None:
                kind, alpha, beta = parse_rule(rule)
                kept: list[torch.Tensor] = []
                message = alpha_beta_message(module, alpha, beta, eps)

                def pre(_m, inp, kept=kept):
                    watch.depth += 1
                    kept.append(inp[0])

                def post(m, _inp, out, kept=kept, kind=kind, message=message):
                    x = kept.pop()
                    watch.depth -= 1
                    if kind == "zb":
                        fn = zbox_relevance(m, *bounds, eps)
                        return Recompute.apply(x, out.detach(), fn, watch.copy)
                    fn = partial(message, nonneg=id(x) in watch.nonneg)
                    if watch.message:
                        return RecomputeMessage.apply(x, out.detach(), fn, watch.copy)
                    return Recompute.apply(x, out.detach(), times_input(fn), watch.copy)

                hooks.forward_pre(module, pre)
                hooks.forward(module, post)
            elif isinstance(module, nn.LayerNorm):
                continue  # its functional layer_norm gets the LN rule from the watch
            elif isinstance(module, _PASS):
                kept_in: list[torch.Tensor] = []

                def enter_pass(m, inp, kept=kept_in):
                    watch.depth += 1
                    kept.append(inp[0])
                    if getattr(m, "inplace", False):  # keep the pre-activation in the graph
                        return (inp[0].clone(), *inp[1:])
                    return None

                hooks.forward_pre(module, enter_pass)

                def post_pass(_m, _inp, out, kept=kept_in):
                    watch.depth -= 1
                    return Pass.apply(kept.pop(), out.detach(), watch.copy)

                hooks.forward(module, post_pass)
            elif has_params:
                raise LayerError(
                    f"LRP has no rule for {type(module).__name__} layers (parameters, not a "
                    "Conv2d / Linear / BatchNorm / pooling); use a gradient method"
                )

    def _folded(self, inputs: torch.Tensor) -> tuple[nn.Module, str, torch.memory_format]:
        """The BN-folded copy, its first convolution and the memory format it runs
        in, cached per model until a module, parameter or buffer of it changes."""
        return cached_per_model(_FOLDED, self.model, inputs, lambda: self._fold(inputs[:1]))

    def _fold(self, probe: torch.Tensor) -> tuple[nn.Module, str, torch.memory_format]:
        model, _convs = fold_batchnorm(self.model, probe)
        if any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is None
            for m in model.modules()
        ):
            raise LayerError("a BatchNorm without running statistics cannot be folded for LRP")
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            expected = self.model(probe)
            require_same_outputs(
                expected,
                model(probe),
                self.name,
                why="when BatchNorm is folded into the convolution before it; the "
                "convolution's output is used elsewhere too. Use a gradient method",
            )
        # on the CPU the copy runs channels-last (see accel.fast_copy): no reorders
        # around each convolution, the W+ ones of z+ included. Measured: LRP
        # epsilon-plus 1.24x a gradient pass on ResNet-20 against 1.66x, the same
        # (1.45x) on VGG-11
        fast = channels_last_if_same(model, probe, expected)
        fmt = torch.channels_last if fast else torch.contiguous_format
        return model, _first_conv(model, probe), fmt

    def attribute(self, inputs, target, logits) -> Explanation:
        at = self.hp["at"] if self.hp["at"] is None else self.layer_name(inputs, "at")
        model = self._folded(inputs)[0]
        raw, target, share = self.propagate(
            len(inputs), lambda lo, hi: inputs[lo:hi], target, at=at, chunk=self.chunk(inputs)
        )
        raw = raw.contiguous()
        maps = to_input_size(sum_channels(raw), tuple(inputs.shape[-2:]))
        total = raw.flatten(1).sum(1)
        eps = float(self.hp["epsilon"])
        if at is None and eps <= 1e-4:  # epsilon's own share is then negligible
            with torch.no_grad():
                scores = target_scores(self.model(inputs), target)
            check_conservation(total, scores, eps, None if _should_conserve(model, eps) else share)
        return self.explanation(maps, target, raw=raw, relevance_sum=total, bias_share=share)

    def propagate(
        self,
        total: int,
        rows: Any,
        target: torch.Tensor | None,
        *,
        at: str | None,
        chunk: int,
        condition: tuple[str, Any] | None = None,
        reduce: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The relevance at the input (or at layer ``at``) of ``total`` rows, in chunks of
        ``chunk``: ``rows(lo, hi)`` gives the inputs of rows ``[lo, hi)``, ``target`` their
        classes (None: each row's top class). Returns ``(raw, targets, bias_share)``: the
        share of each row's score that the epsilon-rule layers' biases absorbed.

        ``condition = (layer, masks)``: concept-conditional relevance (Achtibat et al.
        2023, eq. 7): at ``layer``'s output the backward signal of row ``r`` is multiplied
        by ``masks(lo, hi)[r - lo]`` (``[rows, channels]``, 1 on the channels of the
        concept), so only the relevance flowing through those channels reaches the input.
        Every rule is linear in the relevance it receives, and in the message form the
        signal is ``R / a`` elementwise, so masking it masks the relevance.
        ``reduce(raw_chunk)``, when given, shrinks each chunk's relevance before it is kept.
        """
        model, first, fmt = self._folded(rows(0, 1))
        assign = _RuleAssignment(model, self.hp["composite"], self.hp["rule"], first)
        low, high = self.hp["low"], self.hp["high"]
        zb = any(rule == "zb" for rule in assign.by_module.values())
        message = _message_form(model, zb)
        watch = _Watch(float(self.hp["epsilon"]), message)

        shares: list = [None]

        def tap_biases(hooks: HookSet, message: bool) -> None:
            """Bias shares of the layers given the epsilon rule (z+, alpha-beta and z^B
            ignore biases; the watch's functional layer norms are inside their modules)."""
            for module in model.modules():
                if list(module.children()):
                    continue
                rule = assign.by_module.get(id(module))
                if rule not in (None, "epsilon") or (
                    rule is None
                    and not isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm))
                ):
                    continue

                def tap(m, _inp, out):
                    bias = _bias_of(m, out)
                    if bias is None or not out.requires_grad:
                        return None
                    eps = float(self.hp["epsilon"])
                    return _BiasTap.apply(out, bias, message, eps, shares, watch.copy)

                hooks.forward(module, tap)

        def run(lo: int, hi: int):
            x = rows(lo, hi).detach().contiguous(memory_format=fmt)
            shares[0] = x.new_zeros(hi - lo)
            bounds = (  # z^B bounds: given, or each image's own per-channel range
                (x.amin((2, 3), keepdim=True) if low is None else low,
                 x.amax((2, 3), keepdim=True) if high is None else high)
                if zb else None
            )  # fmt: skip
            with HookSet() as hooks:
                self._hooks(hooks, model, assign, watch, bounds)
                tap_biases(hooks, message)
                if condition is not None:
                    mask = condition[1](lo, hi)
                    hooks.forward(
                        get_layer(model, condition[0]),
                        lambda _m, _i, out: MaskSignal.apply(out, mask, watch.copy),
                    )
                if at is None:
                    x.requires_grad_(True)
                    with watch:
                        out = model(x)
                    a = x
                else:
                    with stored_layer(model, at) as store, watch:
                        out = model(x)
                    a = store["out"]
                    spatial(at, a)
                t = self.chunk_targets(out, target, lo, hi)
                score = target_scores(out, t)
                if message:  # R = a * g: the target logit's message is 1
                    (g,) = torch.autograd.grad(score, a, torch.ones_like(score))
                    r = a.detach() * g
                else:
                    (r,) = torch.autograd.grad(score, a, score.detach())
            return (r if reduce is None else reduce(r)), t, shares[0]

        def attempt(copy: bool):
            nonlocal watch
            watch = _Watch(float(self.hp["epsilon"]), message, copy=copy)
            return run_chunked(run, total, chunk)

        result, _NEEDS_COPY[model] = with_copies_if_refused(attempt, _NEEDS_COPY.get(model, False))
        return result

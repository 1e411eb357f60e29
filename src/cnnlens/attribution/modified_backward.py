"""Modified backward passes for activation modules, through forward hooks only.

Guided Backprop, Deconvnet and DeepLIFT keep the forward pass and change how
the gradient crosses each activation. :func:`modified_activations` registers,
through :class:`cnnlens.hooks.HookSet`, a pre-hook that keeps the
activation's input and a forward hook that replaces its output by the same
values produced by a custom :class:`torch.autograd.Function` carrying the
rule. Everything is removed on exit, also on an error, so the model is left
as found. Per call-site correctness:

* a module reused at several places gets its rule at each call (each call
  builds its own autograd node from its own input);
* an in-place activation gets a clone of its input, so the kept input is
  the pre-activation; if the model relied on the in-place side effect its
  outputs change, which :func:`require_same_outputs` reports;
* an activation applied as a function (``F.relu``) cannot be seen by a hook:
  :func:`require_module_activations` raises a :class:`LayerError` instead of
  returning a silently wrong map.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
from torch import nn

from ..errors import LayerError
from ..hooks import HookSet
from ..layers import structure_key
from ..nets.checks import activation_report

Rule = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
T = TypeVar("T")


_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_rule_model(model: nn.Module, x: torch.Tensor, method: str, select: Callable) -> bool:
    """Both checks below on a one-image probe; returns whether rule outputs must be
    copies (:func:`modified_activations`' ``copy``). The result is cached per model
    (keyed by :func:`structure_key`, so any change to modules or weights re-checks).

    Rules return the activation's output as a view (no copy). A model that
    then modifies that output in place (``y = relu(x); y += b``) makes
    autograd refuse the view; the probe runs with gradients to find out, and
    such models get copies.
    """
    key = structure_key(model, x)
    cached = _CHECKED.get(model, {}).get(method)
    if cached is not None and cached[0] == key:
        return cached[1]
    require_module_activations(model, x, method)
    probe = x[:1].detach()
    pick = lambda m: passthrough if select(m) is not None else None  # noqa: E731
    with torch.no_grad():
        expected = model(probe)

    def run(copy: bool) -> torch.Tensor:
        with torch.enable_grad(), modified_activations(model, pick, copy=copy):
            return model(probe.clone().requires_grad_(True))

    got, copy = with_copies_if_refused(run, False)
    require_same_outputs(expected, got.detach(), method)
    _CHECKED.setdefault(model, {})[method] = (key, copy)
    return copy


def with_copies_if_refused(run: Callable[[bool], T], copy: bool) -> tuple[T, bool]:
    """``(run(copy), copy)``; when autograd refuses an in-place change of a rule's output
    (rules return views), ``(run(True), True)``: the model then needs copies."""
    try:
        return run(copy), copy
    except RuntimeError as exc:
        if copy or "modified inplace" not in str(exc):
            raise
    return run(True), True


def require_module_activations(model: nn.Module, x: torch.Tensor, method: str) -> None:
    """Raise :class:`LayerError` when ``model`` applies activations as functions."""
    functional = [f for f in activation_report(model, x[:1]) if f.kind == "functional"]
    if functional:
        lines = "; ".join(f.message for f in functional)
        raise LayerError(
            f"{method} changes the backward pass of activation modules, but {lines}. "
            "The rule cannot reach a functional activation, and the map would be silently wrong"
        )


def require_same_outputs(
    expected: torch.Tensor, got: torch.Tensor, method: str, *, why: str | None = None
) -> None:
    """The modified forward must give the model's own logits (else the rules mislead)."""
    if expected.shape != got.shape or not torch.allclose(
        expected, got, rtol=1e-4, atol=1e-4 * float(expected.abs().max().clamp_min(1.0))
    ):
        why = why or (
            "when its activations run out of place; the forward relies on an in-place side "
            "effect (e.g. `self.relu(x); return x`). Assign the activation's result instead"
        )
        raise LayerError(
            f"{method}: the model's outputs change (max difference "
            f"{float((expected - got).abs().max()):.3g}) {why}"
        )


@contextlib.contextmanager
def modified_activations(
    model: nn.Module, select: Callable[[nn.Module], Rule | None], *, copy: bool = False
) -> Iterator[None]:
    """Give every module for which ``select(module)`` returns a rule that rule.

    ``rule(module, x, out)`` receives the module's input ``x`` (graph node)
    and its output ``out`` (detached) and returns the replacement output.
    With ``copy`` the replacement is cloned, so the model may modify it in
    place (:func:`check_rule_model` says when that is needed).
    """
    with HookSet() as hooks:
        for module in model.modules():
            rule = select(module)
            if rule is None:
                continue
            if getattr(module, "inplace", False):
                kept: list[torch.Tensor] = []

                def pre(_m, inputs, kept=kept):
                    kept.append(inputs[0])
                    return (inputs[0].clone(), *inputs[1:])

                def post_inplace(m, _inputs, out, kept=kept, rule=rule):
                    new = rule(m, kept.pop(), out.detach())
                    return new.clone() if copy else new

                hooks.forward_pre(module, pre)
                hooks.forward(module, post_inplace)
            else:

                def post(m, inputs, out, rule=rule):
                    new = rule(m, inputs[0], out.detach())
                    return new.clone() if copy else new

                hooks.forward(module, post)
        yield


class _ReluBackward(torch.autograd.Function):
    """Forward: the ReLU output as computed (returned as a view, no copy);
    backward: the Guided Backprop / Deconvnet rule, one or two fused ops."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, out: torch.Tensor, guided: bool) -> torch.Tensor:
        ctx.guided = guided
        if guided:
            ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clamp_min(0)
        if ctx.guided:
            (out,) = ctx.saved_tensors  # ReLU: out > 0 exactly where x > 0
            grad = torch.ops.aten.threshold_backward(grad, out, 0)
        return grad, None, None


class _Identity(torch.autograd.Function):
    """Forward: ``out`` as given (a view); backward: the gradient unchanged."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def passthrough(_module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """A rule that changes nothing; it returns a view as every rule here does."""
    return _Identity.apply(x, out)


def guided_relu(_module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Guided Backprop (Springenberg et al. 2015, eq. for R^l): ``1[x>0] * relu(grad)``."""
    return _ReluBackward.apply(x, out, True)


def deconv_relu(_module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Deconvnet (Zeiler & Fergus 2014): ``relu(grad)``, ignoring the forward mask."""
    return _ReluBackward.apply(x, out, False)


def relu_modules(rule: Rule) -> Callable[[nn.Module], Rule | None]:
    """Selector applying ``rule`` to ``nn.ReLU`` modules only."""
    return lambda m: rule if isinstance(m, nn.ReLU) else None

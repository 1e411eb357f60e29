"""The fast copy of a model that black-box methods run in its place, cached per model.

Methods that use the model as a black box (forward-only chunks, mask
optimisations, gradients to the input) run a copy of it on the CPU:

* channels-last memory (:mod:`.layout`): no reorder around each convolution;
* BatchNorm folded into the convolution before it (:mod:`.folding`): one fewer
  pass over every feature map, forward and backward. Measured on ResNet-20 at
  32 px, interleaved in one process, on the 2-core Intel Xeon (2.6 GHz) this
  project runs on now: forward (batch 32) 1.10-1.16x faster than the unfolded
  channels-last copy at 1 thread, 1.08x at 2; forward+backward to the input
  (batch 16) 1.29-1.38x at 1 thread, 1.33x at 2. ReLUs in place on top of that
  (where nothing else reads their input): forward 1.15x faster at 1 thread,
  1.12x at 2 (batch 32, best of 10 rounds).

Gradient maps (saliency to Grad-CAM, IG, SmoothGrad) use an unfolded copy:
folding rounds differently, which can flip a ReLU whose input is within float
error of 0 and move a gradient by a whole unit's share (seen in one IG step: 0.7 %
of the map's maximum). The folded copy's outputs differ from the model's by
rounding only; the mask optimisations (extremal / meaningful perturbation) use it
too, their result being the optimised mask rather than any one gradient.

Inside :func:`~.compiled.compiled_forward` (long jobs), forward-only chunks run
``torch.compile`` of the folded copy instead. Where a copy cannot be made, or
differs from the model on a probe, the model runs as given and a debug line of
the ``cnnlens.accel`` logger says which copy and why.
"""

from __future__ import annotations

import copy as copying
import logging
import weakref
from collections.abc import Callable
from copy import deepcopy

import torch
from torch import nn
from torch.nn.modules import module

from ..layers import cached_per_model
from .compiled import compiled_copy
from .folding import fast_forward_copy
from .layout import FastCopy, channels_last_if_same, same_outputs

log = logging.getLogger(__name__)

KINDS = ("exact", "folded", "forward")
_FAST_COPY: dict[str, weakref.WeakKeyDictionary] = {
    kind: weakref.WeakKeyDictionary() for kind in KINDS
}
# what deepcopy raises for a model it cannot copy: an attribute that cannot be
# pickled (a lock, an open file), a tensor that is not a leaf
_CANNOT_COPY = (TypeError, copying.Error, RuntimeError)
# what a folded copy's probe forward raises where the model's forward reads a
# BatchNorm that folding replaced (its running_mean, say), or an op refuses the
# in-place ReLU's output
_CANNOT_FOLD = (AttributeError, RuntimeError)


def fast_copy(model: nn.Module, x: torch.Tensor, kind: str = "exact") -> FastCopy | None:
    """The fast copy of ``model`` to run inputs shaped like ``x`` on, or None where
    the model should run as it is.

    Only on the CPU and for an eval-mode model without hooks. The copy is made
    once per model, input shape and ``kind``, and again when a parameter,
    buffer or module changes. It runs channels-last where the model allows it
    (a model that ``.view``s a feature map does not). ``kind``:

    * ``"exact"``: nothing else changed; gradients inside it equal the model's.
    * ``"folded"``: BatchNorm folded into convolutions and ReLUs in place where that
      is exact (:func:`~cnnlens.accel.folding.fast_forward_copy`); differentiable,
      for methods that need its outputs and their gradient to the input only.
    * ``"forward"``: as ``"folded"``, with ReLUs in place also where autograd would
      refuse them; for outputs computed without autograd. Inside
      :func:`~cnnlens.accel.compiled_forward`, ``torch.compile`` of ``"folded"``.

    A copy is used only if it gives the model's logits on one input. Hooks a
    method registers on it must be removed before the call ends, as on the
    model itself.
    """
    if kind not in KINDS:
        raise ValueError(f"fast copy kind must be one of {KINDS}, got {kind!r}")
    if not _copyable(model):
        return None
    if kind == "forward":
        on_cpu = x.device.type == "cpu"
        folded = lambda: fast_copy(model, x, "folded") if on_cpu else None  # noqa: E731
        compiled = compiled_copy(model, x, folded)
        if compiled is not None:
            return compiled
    if x.device.type == "cpu" and x.dim() == 4:
        make = lambda: _make_fast_copy(model, x, kind)  # noqa: E731
        return cached_per_model(_FAST_COPY[kind], model, x, make)
    return None


def fast_model(
    model: nn.Module, x: torch.Tensor, kind: str = "exact"
) -> tuple[nn.Module, torch.memory_format]:
    """The module to run inputs shaped like ``x`` on (:func:`fast_copy`, else the
    model itself) and the memory format to give it inputs in."""
    fast = fast_copy(model, x, kind)
    if fast is None:
        return model, torch.contiguous_format
    return fast.module, fast.layout


def fast_runner(
    model: nn.Module, x: torch.Tensor, kind: str = "exact"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function computing ``model(v)`` for inputs shaped like ``x``, for methods
    that use the model as a black box: through :func:`fast_model`. Gradients to
    ``v`` flow through the ``"exact"`` and ``"folded"`` kinds (``"folded"`` where
    the result is an optimised mask rather than any one gradient, as in extremal
    perturbation)."""
    run, layout = fast_model(model, x, kind)
    if run is model:
        return model
    return lambda v: run(v.contiguous(memory_format=layout))


def forward_runner(model: nn.Module, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function computing ``model(v)`` without gradients for inputs shaped like
    ``x``, through the ``"forward"`` :func:`fast_runner`: a forward-only method
    looks it up once per call and runs every chunk through it."""
    run = fast_runner(model, x, "forward")

    def forward_chunk(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return run(v)

    return forward_chunk


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` without gradients, through :func:`forward_runner`."""
    return forward_runner(model, x)(x)


def _copyable(model: nn.Module) -> bool:
    """In eval mode and without hooks, so a copy behaves as the model itself."""
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    if any(getattr(module, "_global" + name, None) for name in hooks):
        return False
    return not any(m.training or any(getattr(m, h) for h in hooks) for m in model.modules())


def _make_fast_copy(model: nn.Module, x: torch.Tensor, kind: str) -> FastCopy | None:
    probe = x[:1].contiguous()
    with torch.no_grad():
        expected = model(probe)
    try:
        if kind == "exact":
            copy, rewritten = deepcopy(model), False
        else:
            copy, rewritten = _rewritten(model, probe, expected, kind)
    except _CANNOT_COPY as exc:
        log.debug(
            "no %r fast copy of %s: copying or probing it failed (%s: %s); it runs as given",
            kind, type(model).__name__, type(exc).__name__, exc,
        )  # fmt: skip
        return None
    for p in copy.parameters():
        p.requires_grad_(False)
    fast = channels_last_if_same(copy, probe, expected)
    if not (fast or rewritten):
        return None
    return FastCopy(copy, torch.channels_last if fast else torch.contiguous_format)


def _rewritten(model: nn.Module, probe: torch.Tensor, expected: torch.Tensor, kind: str):
    """(:func:`~cnnlens.accel.folding.fast_forward_copy`, True) if that changed
    something and still gives the model's outputs on ``probe``; else (a plain copy,
    False). For ``"folded"``, ReLUs go back out of place if autograd refuses them
    (one that overwrites a tensor autograd keeps, such as a sigmoid's output)."""
    copy, folded, in_place = fast_forward_copy(model, probe)
    if kind == "folded" and in_place and not _differentiable(copy, probe):
        for relu in in_place:
            relu.inplace = False
        in_place = []
    if not (folded or in_place):
        return deepcopy(model), False
    try:
        with torch.no_grad():
            same, why = same_outputs(copy(probe), expected), "its outputs differ"
    except _CANNOT_FOLD as exc:
        same, why = False, f"{type(exc).__name__}: {exc}"
    if not same:
        log.debug(
            "no %r fast copy of %s with BatchNorm folded / ReLUs in place (%s); "
            "an unchanged copy runs instead",
            kind, type(model).__name__, why,
        )  # fmt: skip
        return deepcopy(model), False
    return copy, True


def _differentiable(model: nn.Module, probe: torch.Tensor) -> bool:
    v = probe.clone().requires_grad_(True)
    try:
        torch.autograd.grad(model(v).sum(), v)
    except RuntimeError:
        return False
    return True

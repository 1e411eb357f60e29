"""The one hook manager: every hook cnnlens registers goes through here.

All context managers remove what they registered on exit, also when the
body raises, so a model never keeps a cnnlens hook after a call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from .layers import get_layer


class HookSet:
    """Registers forward / forward-pre hooks and removes all of them at once."""

    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def forward(self, module: nn.Module, fn: Callable) -> None:
        self._handles.append(module.register_forward_hook(fn))

    def forward_pre(self, module: nn.Module, fn: Callable) -> None:
        self._handles.append(module.register_forward_pre_hook(fn))

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> HookSet:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


@contextlib.contextmanager
def capture_outputs(model: nn.Module, layers: Iterable[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of each named layer during forwards inside the block.

    The stored tensors stay in the autograd graph, so gradients with respect to
    them come from ``torch.autograd.grad`` without any backward hook (the
    torch-cam approach, safe with in-place activations that follow the layer).
    If a layer runs more than once per forward, the last output is kept.
    """
    store: dict[str, torch.Tensor] = {}
    with HookSet() as hooks:
        for name in layers:
            module = get_layer(model, name)

            def keep(_m, _inp, out, name=name):
                store[name] = out

            hooks.forward(module, keep)
        yield store


@contextlib.contextmanager
def replace_output(
    model: nn.Module, layer: str, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Replace a layer's output by ``fn(output)`` for forwards inside the block."""
    module = get_layer(model, layer)
    with HookSet() as hooks:
        hooks.forward(module, lambda _m, _inp, out: fn(out))
        yield


def _hook_counts(model: nn.Module) -> list[tuple[int, int, int, int]]:
    return [
        (
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
            len(m._backward_hooks),
            len(getattr(m, "_backward_pre_hooks", {})),
        )
        for m in model.modules()
    ]


def model_fingerprint(model: nn.Module) -> dict:
    """Everything a method must leave as it found it: modes, flags, hooks, parameters."""
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": _hook_counts(model),
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.detach().clone() for b in model.buffers()],
    }


def same_fingerprint(a: dict, b: dict) -> bool:
    """True when two fingerprints of :func:`model_fingerprint` match exactly."""
    if a["training"] != b["training"] or a["requires_grad"] != b["requires_grad"]:
        return False
    if a["hooks"] != b["hooks"]:
        return False
    pairs = list(zip(a["params"], b["params"], strict=True)) + list(
        zip(a["buffers"], b["buffers"], strict=True)
    )
    return all(torch.equal(x, y) for x, y in pairs)


def _submodules(model: nn.Module) -> list[nn.Module]:
    """``model`` and every submodule, each once (a fast ``model.modules()``)."""
    seen: set[int] = set()
    found: list[nn.Module] = []
    stack = [model]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        found.append(m)
        stack.extend(c for c in m._modules.values() if c is not None)
    return found


@contextlib.contextmanager
def frozen(model: nn.Module, *, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Evaluate ``model`` without touching its state as seen from outside.

    Inside the block the model is in eval mode (if ``eval_mode``) and its
    parameters do not require gradients (so attribution backward passes only
    compute input gradients); on exit every module's mode and every
    parameter's ``requires_grad`` flag are restored, also on an exception.
    """
    modules = _submodules(model)
    modes = [(m, m.training) for m in modules]
    flags = [
        p for m in modules for p in m._parameters.values() if p is not None and p.requires_grad
    ]
    try:
        if eval_mode and any(mode for _m, mode in modes):
            model.eval()
        for p in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, mode in modes:  # only what changed: Module.__setattr__ is slow
            if m.training != mode:
                m.training = mode
        for p in flags:
            p.requires_grad_(True)

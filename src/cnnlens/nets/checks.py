"""Check that a model's activations are distinct, non-in-place modules.

Hook-based attribution (Guided Backprop, Deconvnet, DeepLIFT, LRP) and
activation capture give wrong results when one activation module runs at
several places, when it works in place, or when the activation is a plain
function call that no module hook can see. :func:`activation_report` finds
all three with one probe forward: forward hooks count the calls of every
activation module, and a :class:`~cnnlens.tracing.CallWatch` sees
every ``F.relu`` / ``torch.relu`` / ``x.relu()`` (and the other common
activations) that does not run inside an activation module.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError, LayerError
from ..hooks import HookSet
from ..tracing import CallWatch, base_name

ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU,
    nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Softplus, nn.Threshold, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink,
)  # fmt: skip
"""Module classes treated as activations."""

FUNCTION_NAMES = frozenset(
    {"relu", "relu6", "leaky_relu", "prelu", "rrelu", "elu", "selu", "celu", "gelu", "silu",
     "mish", "sigmoid", "tanh", "hardtanh", "hardswish", "hardsigmoid", "softplus",
     "threshold", "logsigmoid", "softsign", "tanhshrink"}
)  # fmt: skip
"""Names of activation functions (``torch.*``, ``F.*``, ``Tensor.*``; ``name_`` = in place)."""


@dataclass(frozen=True)
class Finding:
    """One problem: ``kind`` is ``"reused"``, ``"inplace"`` or ``"functional"``."""

    kind: str
    module: str
    message: str

    def __str__(self) -> str:
        return self.message


def _probe(model: nn.Module, x: torch.Tensor | None) -> torch.Tensor:
    if x is not None:
        if not isinstance(x, torch.Tensor):
            raise InputError(f"x must be a tensor, got {type(x).__name__}")
        return x[:1]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = conv.in_channels if conv is not None else 3
    return torch.zeros(1, channels, 32, 32, device=device, dtype=dtype)


def _label(name: str) -> str:
    return repr(name) if name else "the model's own forward"


def activation_report(model: nn.Module, x: torch.Tensor | None = None) -> list[Finding]:
    """Problems with the activations of ``model`` found by one probe forward.

    ``x`` (first item used) or a zero 32x32 image is run in eval mode without
    gradients; the model's mode, parameters and hooks are unchanged afterwards.
    Reports (a) an activation module called more than once per forward,
    (b) activation modules with ``inplace=True`` and (c) activation functions
    called outside an activation module, with the module that called them.
    An empty list means every activation is its own non-in-place module.
    """
    all_names: dict[int, list[str]] = defaultdict(list)
    for name, m in model.named_modules(remove_duplicate=False):
        all_names[id(m)].append(name)
    modules = dict(model.named_modules())
    calls: Counter[str] = Counter()
    stack: list[tuple[str, nn.Module]] = []
    functional: Counter[tuple[str, str, bool]] = Counter()

    def on_function(name: str, _args, kwargs: dict, _out) -> None:
        fname, in_place = base_name(name)
        if fname not in FUNCTION_NAMES:
            return
        where, module = stack[-1] if stack else ("", model)
        if not isinstance(module, ACTIVATIONS):
            functional[(where, fname, in_place or bool(kwargs.get("inplace", False)))] += 1

    def push(name: str, module: nn.Module):
        def pre(_m, _inp):
            stack.append((name, module))
            if isinstance(module, ACTIVATIONS):
                calls[name] += 1

        def post(_m, _inp, _out):
            if stack and stack[-1][1] is module:
                stack.pop()

        return pre, post

    probe = _probe(model, x)
    was_training = model.training
    with HookSet() as hooks:
        for name, module in modules.items():
            if name:
                pre, post = push(name, module)
                hooks.forward_pre(module, pre)
                hooks.forward(module, post)
        model.eval()
        try:
            with torch.no_grad(), CallWatch(on_function):
                model(probe)
        except Exception as exc:
            raise InputError(
                f"probe forward of {type(model).__name__} on a {tuple(probe.shape)} input failed "
                f"({type(exc).__name__}: {exc}); pass an example input x"
            ) from exc
        finally:
            model.train(was_training)

    findings: list[Finding] = []
    for name, count in calls.items():
        if count > 1:
            module = modules[name]
            aliases = all_names[id(module)]
            also = f", registered as {', '.join(map(repr, aliases))}" if len(aliases) > 1 else ""
            findings.append(
                Finding(
                    "reused",
                    name,
                    f"activation module {name!r} ({type(module).__name__}) runs {count} times in "
                    f"one forward{also}; give every place its own instance",
                )
            )
    for name, module in modules.items():
        if isinstance(module, ACTIVATIONS) and getattr(module, "inplace", False):
            findings.append(
                Finding(
                    "inplace",
                    name,
                    f"activation module {name!r} ({type(module).__name__}) has inplace=True; "
                    "use inplace=False",
                )
            )
    for (where, fname, inplace), count in functional.items():
        kind = f"in-place {fname}_" if inplace else fname
        findings.append(
            Finding(
                "functional",
                where,
                f"functional {kind} called {count} time(s) in {_label(where)} "
                f"({type(modules[where]).__name__}); use an activation module (e.g. nn.ReLU()) "
                "so hooks can see it",
            )
        )
    return findings


def require_distinct_activations(model: nn.Module, x: torch.Tensor | None = None) -> None:
    """Raise :class:`~cnnlens.errors.LayerError` listing every activation problem."""
    findings = activation_report(model, x)
    if findings:
        lines = "\n".join(f"  - {f.message}" for f in findings)
        raise LayerError(
            f"{type(model).__name__} has {len(findings)} activation problem(s) that break "
            f"hook-based methods:\n{lines}"
        )

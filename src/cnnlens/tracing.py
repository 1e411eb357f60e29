"""The one way cnnlens watches a model run: every torch function call it makes.

Module hooks see modules; they miss what a model does with plain functions
(``F.relu``, ``x + r``, ``x.view(...)``). :class:`CallWatch` is a
:class:`~torch.overrides.TorchFunctionMode`: inside ``with watch:`` every call of a
``torch`` function, ``torch.nn.functional`` function or ``Tensor`` method made by
Python code passes through :meth:`CallWatch.call` with its name and arguments. A
call made while the watch handles another (``F.relu`` calling ``torch.relu``) runs
unseen, as do calls while ``depth`` is above zero (a user that handles a whole
module itself raises it in the module's hooks).

Its users: LRP gives functional operations their rule (:mod:`cnnlens.attribution.lrp`),
:func:`cnnlens.nets.checks.activation_report` finds activation functions outside
modules, and BatchNorm folding records which module read each tensor
(:mod:`cnnlens.accel.folding`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

Seen = Callable[[str, tuple, dict, Any], None]
"""``seen(name, args, kwargs, out)``: told of each call after it ran."""


def function_name(func: Callable) -> str:
    """The name a torch function or method is known by (``"relu_"``, ``"__add__"``)."""
    return getattr(func, "__name__", "")


def tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in ``obj``, looking inside tuples, lists and dict values (a call's
    arguments, keyword arguments or result)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from tensors(item)


def base_name(name: str) -> tuple[str, bool]:
    """``name`` without the trailing ``_`` of an in-place variant, and whether it had
    one (``"relu_"`` -> ``("relu", True)``; ``"__iadd__"`` stays as it is)."""
    if name.endswith("_") and not name.startswith("_"):
        return name[:-1], True
    return name, False


class CallWatch(TorchFunctionMode):
    """Sees every torch function call inside ``with watch:``.

    By default each call runs as it would and, if given, ``seen`` is told of it
    afterwards. A user that changes what a call does (LRP) overrides :meth:`call`.
    """

    def __init__(self, seen: Seen | None = None) -> None:
        super().__init__()
        self.seen = seen
        self.depth = 0  # above 0: calls run unseen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth:
            return func(*args, **kwargs)
        return self.call(func, function_name(func), args, kwargs)

    def call(self, func: Callable, name: str, args: tuple, kwargs: dict) -> Any:
        """Run one call and return its result (what the model then sees)."""
        out = func(*args, **kwargs)
        if self.seen is not None:
            self.seen(name, args, kwargs, out)
        return out

"""Attribution methods, found by name.

``cnnlens.explain(model, x, method="grad-cam", target=None, **hyperparameters)``
runs any registered method; ``cnnlens.methods()`` lists them. A module in this
package adds methods by decorating :class:`~cnnlens.attribution.base.Method`
subclasses with :func:`register`; modules are discovered automatically.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import warnings
from importlib.metadata import entry_points

import torch
from torch import nn

from ..errors import InputError
from ..types import Explanation
from .base import Method, Setup, check_inputs, resolve_target

_METHODS: dict[str, type[Method]] = {}
_INFRASTRUCTURE = {"base"}
# Modules outside this package that register methods: a paper's package registers its
# method from its own module, which this list names (the generic layer never imports it
# statically). Third-party packages declare theirs as entry points in the group
# ``cnnlens.methods`` (``[project.entry-points."cnnlens.methods"]``).
PROVIDERS = ("cnnlens.studies.relabel.method",)
ENTRY_POINTS = "cnnlens.methods"


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` reachable by ``cls.name``."""
    if not cls.name:
        raise InputError(f"{cls.__name__} has no registry name")
    _METHODS[cls.name] = cls
    return cls


_DISCOVERED: list[bool] = []


def _discover() -> None:
    """Import every method module of this package, the :data:`PROVIDERS` and the
    modules of the ``cnnlens.methods`` entry points (once per process)."""
    if _DISCOVERED:
        return
    _DISCOVERED.append(True)
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _INFRASTRUCTURE and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    for module in PROVIDERS:
        importlib.import_module(module)
    for entry in entry_points(group=ENTRY_POINTS):
        if entry.module in PROVIDERS:
            continue
        try:
            entry.load()
        except ImportError as exc:  # a broken third-party package must not hide the others
            warnings.warn(
                f"cnnlens.methods entry point {entry.name!r} ({entry.value}) did not import: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )


def methods() -> dict[str, str]:
    """Registered method names with a one-line description each."""
    _discover()
    return {name: cls.description for name, cls in sorted(_METHODS.items())}


def get(name: str) -> type[Method]:
    """The method class registered as ``name``."""
    _discover()
    if name not in _METHODS:
        close = difflib.get_close_matches(name, list(_METHODS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown attribution method {name!r}{hint} (see cnnlens.methods())")
    return _METHODS[name]


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    method: str = "saliency",
    target: int | torch.Tensor | None = None,
    **hyperparameters,
) -> Explanation:
    """Explain ``model``'s outputs for ``inputs`` with the method called ``method``."""
    return get(method)(model, **hyperparameters)(inputs, target=target)


__all__ = [
    "Method",
    "Setup",
    "check_inputs",
    "explain",
    "get",
    "methods",
    "register",
    "resolve_target",
]

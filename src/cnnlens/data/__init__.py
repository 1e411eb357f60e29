"""Data sets: embedded ones that ship offline and readers for data on disk.

``load("shapes", split="test")``, ``load("digits")``, ``load("cifar10:/path")``,
``load("folder:/path")``: the part before ``:`` names a registered loader, the
part after it is the path its reader opens. ``as_dataset(obj)`` turns a user's own
torch ``Dataset``, ``DataLoader`` or ``(x, y)`` tensors into a cnnlens data set; every
API that takes data calls it, so any of those can be passed directly.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import DataError
from .adapt import as_dataset
from .base import ImageDataset, TensorDataset

_LOADERS: dict[str, tuple[Callable[..., ImageDataset], str]] = {}


def register(name: str, description: str) -> Callable:
    """Decorator: make a loader reachable as ``load("name[:path]", split=...)``."""

    def wrap(fn: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        _LOADERS[name] = (fn, description)
        return fn

    return wrap


def names() -> dict[str, str]:
    """Registered loader names with a one-line description each."""
    _import_all()
    return {k: d for k, (_f, d) in sorted(_LOADERS.items())}


def load(spec: str, split: str = "train", **options) -> ImageDataset:
    """Open a data set by name: ``"shapes"``, ``"digits"``, ``"cifar10:/data/cifar"``..."""
    _import_all()
    name, _, path = spec.partition(":")
    if name not in _LOADERS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(sorted(_LOADERS))}")
    fn, _ = _LOADERS[name]
    if path:
        options["path"] = path
    try:
        return fn(split=split, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise DataError(f"data set {name!r} takes no option(s) {sorted(options)}: {exc}") from None


def _import_all() -> None:
    from . import digits, readers, shapes  # noqa: F401  (registration side effects)


__all__ = ["ImageDataset", "TensorDataset", "as_dataset", "load", "names", "register"]

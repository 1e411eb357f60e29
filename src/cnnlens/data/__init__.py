"""Data sets: embedded ones that ship offline and readers for data on disk.

``load("shapes", split="test")``, ``load("digits")``, ``load("cifar10:/path")``,
``load("folder:/path")``: the part before ``:`` names a registered loader, the
part after it is the path its reader opens. ``as_dataset(obj)`` turns a user's own
torch ``Dataset``, ``DataLoader`` or ``(x, y)`` tensors into a cnnlens data set; every
API that takes data calls it, so any of those can be passed directly.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import DataError, InputError
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


def loader_options(spec: str) -> set[str]:
    """The keyword options the loader ``spec`` names takes (e.g. ``size``, ``mean``, ``std``
    for ``folder:``), so a caller passes a model card's input size only where it applies."""
    import inspect

    _import_all()
    name = spec.partition(":")[0]
    if name not in _LOADERS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(sorted(_LOADERS))}")
    params = inspect.signature(_LOADERS[name][0]).parameters.values()
    return {p.name for p in params if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD}


def split_size(spec: str, split: str = "train", **options) -> int:
    """How many images split ``split`` of ``spec`` holds, without generating a generated
    set (a loader may say with a ``split_sizes`` attribute, as ``shapes`` does)."""
    _import_all()
    name = spec.partition(":")[0]
    sizes = getattr(_LOADERS.get(name, (None,))[0], "split_sizes", None)
    if sizes is not None and "n" not in options:
        if split not in sizes:
            raise DataError(f"{name} has splits {sorted(sizes)}, not {split!r}")
        return int(sizes[split])
    return len(load(spec, split=split, **options))


def check_count(n: int | None, spec: str, split: str, *, option: str, **options) -> None:
    """Refuse ``n`` images (``None``: the whole split) unless 1 <= n <= the split's size,
    so a typo neither generates a million images nor claims more than the split holds."""
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"{option} must be a positive integer, got {n!r}")
    size = split_size(spec, split, **options)
    if n > size:
        raise InputError(
            f"{option} {n} is more than the {split} split of {spec} holds ({size} images)"
        )


def check_subset(n: int | None, dataset: ImageDataset, *, option: str) -> None:
    """Refuse the first ``n`` images of a loaded ``dataset`` unless 1 <= n <= its size."""
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"{option} must be a positive integer, got {n!r}")
    if n > len(dataset):
        raise InputError(f"{option} {n} is more than the {len(dataset)} images of {dataset.name}")


def _import_all() -> None:
    from . import digits, readers, shapes  # noqa: F401  (registration side effects)


__all__ = [
    "ImageDataset",
    "TensorDataset",
    "as_dataset",
    "check_count",
    "check_subset",
    "load",
    "loader_options",
    "names",
    "register",
    "split_size",
]

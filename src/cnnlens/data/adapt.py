"""Bring your own data: :func:`as_dataset` turns what a user has into an ImageDataset.

Every public entry point that takes a data set calls it once, so each accepts:

- a cnnlens data set (:class:`~cnnlens.data.base.ImageDataset`), returned as it is;
- a pair of tensors ``(x, y)``: images ``[N,C,H,W]`` float, labels ``[N]`` integer
  (a ``torch.utils.data.TensorDataset`` of two tensors is the same), kept in memory;
- a map-style ``torch.utils.data.Dataset`` of ``(image, label)`` pairs, read lazily:
  labels come from its ``targets`` attribute when it has one (torchvision data sets
  do; a ``Subset`` of one too), else from one pass over the items;
- a ``torch.utils.data.DataLoader``: over a map-style data set its ``dataset`` is
  wrapped (the loader's batching, sampler and shuffling are not used: cnnlens
  batches itself); over an ``IterableDataset`` it is iterated once and kept in memory.

Foreign images are taken as already normalised for the model (see
:mod:`cnnlens.data.foreign`); ``classes`` default to the source's ``classes``
attribute, else ``"0".."K-1"`` with K the largest label + 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from ..errors import DataError
from .base import ImageDataset
from .foreign import TensorPairs, WrappedDataset, as_image, as_label, as_pair

ACCEPTED = (
    "a cnnlens data set (cnnlens.data.ImageDataset), a torch.utils.data.Dataset of "
    "(image, label) pairs, a torch.utils.data.DataLoader, or tensors (x [N,C,H,W], y [N])"
)


def as_dataset(
    obj: object,
    *,
    classes: Sequence[str] | int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """``obj`` as a cnnlens data set (see the module docstring for what it may be).

    ``classes`` (names, or their number), ``mean``/``std`` (the normalisation the
    images already carry, used only to display them) and ``name`` describe foreign
    data; a cnnlens data set already has them and takes none.
    """
    options = {"classes": classes, "mean": mean, "std": std}
    if isinstance(obj, ImageDataset):
        given = [k for k, v in {**options, "name": name}.items() if v is not None]
        if given:
            raise DataError(
                f"{obj.name} is already a cnnlens data set; {', '.join(given)} "
                "describe foreign data only"
            )
        return obj
    if isinstance(obj, DataLoader):
        obj = obj.dataset if not isinstance(obj.dataset, IterableDataset) else obj
    if isinstance(obj, torch.utils.data.TensorDataset):
        if len(obj.tensors) != 2:
            raise DataError(
                f"a TensorDataset of {len(obj.tensors)} tensors; expected two, images x and "
                "labels y"
            )
        obj = obj.tensors
    if isinstance(obj, tuple | list) and len(obj) == 2:
        x, y = (_as_tensor(t, what) for t, what in zip(obj, ("images x", "labels y"), strict=True))
        return TensorPairs(x, y, **options, name=name or "tensors")
    if isinstance(obj, IterableDataset | DataLoader):
        name = name or type(getattr(obj, "dataset", obj)).__name__
        x, y = _materialise(obj, name)
        return TensorPairs(x, y, **options, name=name)
    if isinstance(obj, Dataset):
        name = name or type(obj).__name__
        if classes is None and _names(obj) is not None:
            options["classes"] = _names(obj)
        return WrappedDataset(obj, _labels(obj, name), **options, name=name)
    hint = " (open a named data set with cnnlens.data.load)" if isinstance(obj, str) else ""
    raise DataError(f"cannot use a {type(obj).__name__} as a data set{hint}; give {ACCEPTED}")


def _as_tensor(value: object, what: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise DataError(
            f"(x, y): {what} is a {type(value).__name__}; expected a tensor. Give {ACCEPTED}"
        )
    return value


def _length(source: Dataset, name: str) -> int:
    try:
        return len(source)
    except TypeError:
        raise DataError(f"{name} has no len(); a map-style data set needs __len__") from None


def _names(source: Dataset) -> list[str] | None:
    """The source's ``classes`` attribute (also through a ``Subset``), if it is a list."""
    while isinstance(source, Subset) and not hasattr(source, "classes"):
        source = source.dataset
    names = getattr(source, "classes", None)
    return list(names) if isinstance(names, Sequence) and not isinstance(names, str) else None


def _targets(source: Dataset, n: int) -> torch.Tensor | None:
    """``n`` integer labels from a ``targets`` attribute (also through a ``Subset``), or None."""
    if isinstance(source, Subset) and not hasattr(source, "targets"):
        inner = _targets(source.dataset, _length(source.dataset, type(source.dataset).__name__))
        return None if inner is None else inner[torch.as_tensor(source.indices, dtype=torch.long)]
    targets = getattr(source, "targets", None)
    if targets is None:
        return None
    try:
        targets = torch.as_tensor(targets)
    except (TypeError, ValueError, RuntimeError):
        return None
    ok = targets.dim() == 1 and not targets.is_floating_point() and targets.dtype != torch.bool
    return targets.long() if ok and len(targets) == n else None


def _labels(source: Dataset, name: str) -> torch.Tensor:
    """Labels from ``targets`` when it fits, else read from every item (one pass)."""
    n = _length(source, name)
    targets = _targets(source, n)
    if targets is not None:
        return targets
    labels = torch.empty(n, dtype=torch.long)
    for i in range(n):
        where = f"{name} item {i}"
        labels[i] = as_label(as_pair(source[i], where)[1], where)
    return labels


def _materialise(source: IterableDataset | DataLoader, name: str):
    """Iterate ``source`` once: items ``(image, label)`` or batches ``(x [B,...], y [B])``."""
    images, labels = [], []
    for i, item in enumerate(source):
        where = f"{name} element {i}"
        x, y = as_pair(item, where)
        if isinstance(x, torch.Tensor | np.ndarray) and x.ndim == 4:  # a batch
            x, y = torch.as_tensor(x), torch.as_tensor(y)
            if y.dim() != 1 or len(y) != len(x):
                raise DataError(
                    f"{where}: a batch of {len(x)} images needs labels [{len(x)}], got shape "
                    f"{tuple(y.shape)}"
                )
            if not x.is_floating_point() or y.is_floating_point() or y.dtype == torch.bool:
                raise DataError(
                    f"{where}: a batch of {x.dtype} images and {y.dtype} labels; expected float "
                    "images already normalised for the model and integer labels"
                )
            images.append(x.float())
            labels.append(y.long())
        else:
            images.append(as_image(x, where)[None])
            labels.append(torch.tensor([as_label(y, where)]))
    if not images:
        raise DataError(f"{name} yielded nothing; the data set is empty")
    shapes = {tuple(x.shape[1:]) for x in images}
    if len(shapes) > 1:
        raise DataError(f"{name}: images of different shapes {sorted(shapes)}; need one shape")
    return torch.cat(images), torch.cat(labels)

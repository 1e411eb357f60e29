"""Attribute data: a data set whose images carry K binary attributes.

A cnnlens data set with ``attributes`` ``[N,K]`` (``shapes``, ``celeba``), or a user's own
``(x, attributes)`` tensors (images ``[N,C,H,W]`` normalised, attributes ``[N,K]`` 0/1).
Anything without attributes raises a :class:`~cnnlens.errors.DataError` that says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...data.adapt import as_dataset
from ...data.base import ImageDataset
from ...data.foreign import TensorPairs
from ...errors import DataError


def attribute_dataset(obj: object, names: Sequence[str] | None = None) -> ImageDataset:
    """``obj`` as a data set with ``attributes`` ``[N,K]`` bool and ``attribute_names``."""
    if isinstance(obj, tuple | list) and len(obj) == 2 and isinstance(obj[1], torch.Tensor):
        x, a = obj
        if a.dim() == 2:
            if not bool(((a == 0) | (a == 1)).all()):
                raise DataError("attribute targets must be 0/1 (or bool), got other values")
            data = TensorPairs(x, torch.zeros(len(a), dtype=torch.long), classes=1, name="tensors")
            data.attributes = a.bool()
            data.attribute_names = list(names or [str(k) for k in range(a.shape[1])])
            if len(data.attribute_names) != a.shape[1]:
                raise DataError(f"{len(data.attribute_names)} names for {a.shape[1]} attributes")
            return data
    data = as_dataset(obj)
    if data.attributes is None or data.attributes.dim() != 2 or data.attributes.shape[1] < 1:
        raise DataError(
            f"{data.name} has no attributes; the attribute network needs a data set with "
            "binary attributes [N,K] (shapes, celeba:/path, or (x, attributes) tensors)"
        )
    if data.attribute_names is None:
        data.attribute_names = [str(k) for k in range(data.attributes.shape[1])]
    return data


def attributes_of(data: ImageDataset) -> torch.Tensor:
    """The data set's attributes as a bool ``[N,K]`` tensor."""
    return data.attributes.bool()

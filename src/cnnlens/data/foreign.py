"""Data sets made from a user's own data: images already normalised for the model.

:class:`TensorPairs` holds ``(x, y)`` tensors in memory; :class:`WrappedDataset` reads
a map-style ``torch.utils.data.Dataset`` of ``(image, label)`` pairs lazily, one item
at a time. Both follow :class:`~cnnlens.data.base.ImageDataset` with one difference
of meaning: the images are taken as the model reads them, so ``__getitem__`` and
:meth:`tensors` return them exactly as given (no normalise / denormalise round trip).

Display (``raw``, ``raw_batch``, ``denormalize``): with the ``mean``/``std`` the
images were normalised with, those are undone and clamped to [0, 1]; without them,
each image's own minimum..maximum is stretched to [0, 1] (display only: the
contrast between images is lost, nothing else reads it), and ``mean``/``std`` are
the identity (0, 1) so a checkpoint saved from this data says "feed images as they are".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import DataError
from .base import ImageDataset


def stretch(images: torch.Tensor) -> torch.Tensor:
    """Each image of ``[N,C,H,W]`` rescaled from its own min..max to [0, 1] (constant: 0)."""
    flat = images.flatten(1)
    low = flat.min(1).values.view(-1, 1, 1, 1)
    span = (flat.max(1).values.view(-1, 1, 1, 1) - low).clamp_min(1e-12)
    return ((images - low) / span).clamp(0, 1)


def class_names(classes: Sequence[str] | int | None, labels: torch.Tensor, name: str) -> list[str]:
    """``classes`` as a list of names; ``None`` or an int ``K`` gives ``"0".."K-1"``.

    Without ``classes`` the number of classes is the largest label + 1.
    """
    if classes is None:
        classes = int(labels.max()) + 1
    if isinstance(classes, int) and not isinstance(classes, bool):
        if classes < 1:
            raise DataError(f"{name}: the number of classes must be positive, got {classes}")
        return [str(i) for i in range(classes)]
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise DataError(
            f"{name}: classes must be a list of names or a number of classes, got {classes!r}"
        )
    return [str(c) for c in classes]


def check_labels(labels: torch.Tensor, n_classes: int, name: str) -> None:
    """DataError naming the first label outside ``[0, n_classes)`` and its index."""
    bad = ((labels < 0) | (labels >= n_classes)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise DataError(
            f"{name}: label {int(labels[i])} of item {i} is outside [0, {n_classes}) "
            f"({bad.numel()} such label(s)); give classes= covering every label"
        )


def as_pair(item: object, where: str) -> tuple[object, object]:
    """``item`` as ``(image, label)``; DataError saying what it is otherwise."""
    if isinstance(item, tuple | list) and len(item) == 2:
        return item[0], item[1]
    what = f"a {type(item).__name__}"
    if isinstance(item, tuple | list):
        what += f" of {len(item)} items"
    raise DataError(f"{where} is {what}; expected a pair (image, label)")


def as_image(image: object, where: str) -> torch.Tensor:
    """``image`` as a float ``[C,H,W]`` tensor (numpy accepted); DataError saying what it is."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, torch.Tensor):
        raise DataError(
            f"{where}: the image is a {type(image).__name__}; expected a float tensor [C,H,W] "
            "already normalised for the model (e.g. a transform ending in ToTensor and Normalize)"
        )
    if not image.is_floating_point():
        raise DataError(
            f"{where}: the image has dtype {image.dtype}; expected float [C,H,W] already "
            "normalised for the model"
        )
    if image.dim() != 3:
        raise DataError(f"{where}: the image has shape {tuple(image.shape)}; expected [C,H,W]")
    return image if image.dtype == torch.float32 else image.float()


def as_label(label: object, where: str) -> int:
    """``label`` (int, numpy integer or 0-d integer tensor) as an int; DataError otherwise."""
    if isinstance(label, np.ndarray | torch.Tensor) and label.ndim == 0:
        label = label.item()
    if isinstance(label, int | np.integer) and not isinstance(label, bool | np.bool_):
        return int(label)
    raise DataError(f"{where}: the label is {label!r}; expected an integer class index")


class ForeignDataset(ImageDataset):
    """Shared behaviour of already-normalised data: display and normalisation facts."""

    def _set_normalisation(self, mean, std, channels: int) -> None:
        self.normalisation_known = mean is not None and std is not None
        if (mean is None) != (std is None):
            raise DataError(f"{self.name}: give both mean and std, or neither")
        mean = (0.0,) * channels if mean is None else tuple(float(m) for m in mean)
        std = (1.0,) * channels if std is None else tuple(float(s) for s in std)
        if len(mean) != channels or len(std) != channels:
            raise DataError(
                f"{self.name}: mean and std need one value per channel ({channels}), "
                f"got {len(mean)} and {len(std)}"
            )
        if min(std) <= 0:
            raise DataError(f"{self.name}: std must be positive, got {list(std)}")
        self.mean, self.std = mean, std

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Displayable ``[0,1]`` images: normalisation undone, or each image stretched."""
        return super().denormalize(images) if self.normalisation_known else stretch(images)

    def raw(self, index: int) -> torch.Tensor:
        return self.denormalize(self[index][0][None])[0]

    def raw_batch(self, indices=None) -> torch.Tensor:
        return self.denormalize(self.tensors(indices)[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self[0][0].shape)

    def describe(self) -> dict:
        facts = super().describe()
        if not self.normalisation_known:
            facts["mean"] = facts["std"] = None  # images used as given
        return facts


class TensorPairs(ForeignDataset):
    """``(x, y)`` in memory: images ``[N,C,H,W]`` float as the model reads them, labels ``[N]``."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        classes: Sequence[str] | int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        name: str = "tensors",
    ) -> None:
        self.name = name
        if images.dim() != 4 or not images.is_floating_point():
            raise DataError(
                f"{name}: images x must be a float tensor [N,C,H,W], got {images.dtype} "
                f"of shape {tuple(images.shape)}"
            )
        if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise DataError(
                f"{name}: labels y must be an integer tensor [N], got {labels.dtype} "
                f"of shape {tuple(labels.shape)}"
            )
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{name}: {images.shape[0]} images x but {labels.shape[0]} labels y")
        if images.shape[0] == 0:
            raise DataError(f"{name}: the data set is empty")
        self.images = images if images.dtype == torch.float32 else images.float()
        self.labels = labels.long()
        self.classes = class_names(classes, self.labels, name)
        check_labels(self.labels, len(self.classes), name)
        self._set_normalisation(mean, std, int(images.shape[1]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.name} of size {len(self)}")
        return self.images[index], int(self.labels[index])

    def tensors(self, indices=None) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._indices(indices)
        return self.images[idx], self.labels[idx]

    def subset(self, indices: Sequence[int] | torch.Tensor) -> TensorPairs:
        """A new data set with the chosen images."""
        idx = self._indices(indices)
        return TensorPairs(
            self.images[idx],
            self.labels[idx],
            classes=self.classes,
            mean=self.mean if self.normalisation_known else None,
            std=self.std if self.normalisation_known else None,
            name=self.name,
        )


class WrappedDataset(ForeignDataset):
    """A map-style torch ``Dataset`` of ``(image, label)`` read lazily, item by item.

    ``labels`` (one per item, in the source's order) are given by the caller;
    ``positions`` maps this data set's items to the source's (a subset's view).
    Every item read is checked: a float ``[C,H,W]`` image of the first item's shape.
    """

    def __init__(
        self,
        source: torch.utils.data.Dataset,
        labels: torch.Tensor,
        *,
        classes: Sequence[str] | int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        name: str = "dataset",
        positions: torch.Tensor | None = None,
    ) -> None:
        self.source, self.name = source, name
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.positions = torch.arange(len(self.labels)) if positions is None else positions
        if len(self.labels) == 0:
            raise DataError(f"{name}: the data set is empty")
        self.classes = class_names(classes, self.labels, name)
        check_labels(self.labels, len(self.classes), name)
        self._shape: tuple[int, ...] | None = None
        self._shape = tuple(self._image(0).shape)
        self._set_normalisation(mean, std, self._shape[0])

    def _image(self, index: int) -> torch.Tensor:
        position = int(self.positions[index])
        where = f"{self.name} item {position}"
        image = as_image(as_pair(self.source[position], where)[0], where)
        if self._shape is not None and tuple(image.shape) != self._shape:
            raise DataError(
                f"{where}: the image has shape {tuple(image.shape)} but the first has "
                f"{self._shape}; every image needs the same shape"
            )
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.name} of size {len(self)}")
        return self._image(index % len(self)), int(self.labels[index])

    def tensors(self, indices=None) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._indices(indices)
        return torch.stack([self._image(int(i)) for i in idx]), self.labels[idx]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._shape

    def subset(self, indices: Sequence[int] | torch.Tensor) -> WrappedDataset:
        """A lazy view of the chosen items (nothing is read but the first, to check it)."""
        idx = self._indices(indices)
        return WrappedDataset(
            self.source,
            self.labels[idx],
            classes=self.classes,
            mean=self.mean if self.normalisation_known else None,
            std=self.std if self.normalisation_known else None,
            name=self.name,
            positions=self.positions[idx],
        )

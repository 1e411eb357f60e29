"""The one data-set interface every cnnlens data set follows.

A data set is a ``torch.utils.data.Dataset`` of ``(image, label)`` pairs with
images ``float32 [C,H,W]`` normalised by its ``mean``/``std``, plus:

- ``classes``: class names; ``mean``, ``std``: per-channel normalisation;
- optional ground truth, indexed like the images: ``boxes`` ``[N,4]`` int64
  inclusive pixel coordinates ``(x0, y0, x1, y1)``, ``masks`` ``[N,1,H,W]``
  bool, ``attributes`` ``[N,A]`` bool with ``attribute_names``;
- :meth:`tensors` for the whole set (or a subset) as one normalised batch,
  and :meth:`denormalize` to get displayable ``[0,1]`` images back.

A user's own data (a torch ``Dataset``, a ``DataLoader``, ``(x, y)`` tensors) becomes
one through :func:`cnnlens.data.as_dataset` (:mod:`cnnlens.data.foreign`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ..errors import DataError, InputError


class ImageDataset(Dataset):
    """Base class: subclasses implement ``__len__`` and :meth:`raw` (``[0,1]`` images)."""

    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: torch.Tensor
    boxes: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    attributes: torch.Tensor | None = None
    attribute_names: list[str] | None = None
    name: str = "dataset"

    # --- to implement -------------------------------------------------
    def raw(self, index: int) -> torch.Tensor:
        """Image ``index`` as float32 ``[C,H,W]`` in [0, 1], not normalised."""
        raise NotImplementedError

    # --- shared behaviour ---------------------------------------------
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.raw(0).shape)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised ``[N,C,H,W]`` back to displayable ``[0,1]`` images."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images * std + mean).clamp(0, 1)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.name} of size {len(self)}")
        image = self.normalize(self.raw(index)[None])[0]
        return image, int(self.labels[index])

    def raw_batch(self, indices: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Un-normalised images ``[n,C,H,W]`` in [0, 1]."""
        idx = self._indices(indices)
        return torch.stack([self.raw(int(i)) for i in idx])

    def tensors(
        self, indices: Sequence[int] | torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images ``[n,C,H,W]`` and labels ``[n]`` for ``indices`` (default: all)."""
        idx = self._indices(indices)
        return self.normalize(self.raw_batch(idx)), self.labels[idx]

    def _indices(self, indices) -> torch.Tensor:
        if indices is None:
            return torch.arange(len(self))
        idx = torch.as_tensor(indices, dtype=torch.long).flatten()
        if idx.numel() and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise InputError(
                f"indices must lie in [0, {len(self)}) for {self.name}, got "
                f"min {int(idx.min())} max {int(idx.max())}"
            )
        return idx % len(self)

    def describe(self) -> dict:
        """Plain facts about the data set for reports and checkpoints."""
        return {
            "name": self.name,
            "size": len(self),
            "classes": list(self.classes),
            "mean": list(self.mean),
            "std": list(self.std),
            "image_shape": list(self.image_shape),
            "has_boxes": self.boxes is not None,
            "has_masks": self.masks is not None,
            "attribute_names": list(self.attribute_names or []),
        }


class TensorDataset(ImageDataset):
    """A data set held in memory as a uint8 ``[N,C,H,W]`` tensor (or float in [0,1])."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        classes: Sequence[str],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        attributes: torch.Tensor | None = None,
        attribute_names: Sequence[str] | None = None,
        name: str = "dataset",
    ) -> None:
        if images.dim() != 4:
            raise DataError(f"{name}: images must be [N,C,H,W], got shape {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise DataError(f"{name}: the data set is empty")
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{name}: {images.shape[0]} images but {labels.shape[0]} labels")
        self.images = images
        self.labels = labels.long()
        self.classes = list(classes)
        self.name = name
        if mean is None or std is None:
            floats = self._as_float(images[: min(len(images), 10000)])
            mean = floats.mean(dim=(0, 2, 3)).tolist()
            std = floats.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.boxes, self.masks, self.attributes = boxes, masks, attributes
        self.attribute_names = list(attribute_names) if attribute_names is not None else None
        if int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes):
            raise DataError(
                f"{name}: labels must lie in [0, {len(self.classes)}), got "
                f"[{int(self.labels.min())}, {int(self.labels.max())}]"
            )

    @staticmethod
    def _as_float(images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()

    def raw(self, index: int) -> torch.Tensor:
        return self._as_float(self.images[index])

    def raw_batch(self, indices=None) -> torch.Tensor:
        return self._as_float(self.images[self._indices(indices)])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> TensorDataset:
        """A new data set with the chosen images and their ground truth."""
        idx = self._indices(indices)

        def pick(t):
            return None if t is None else t[idx]

        return TensorDataset(
            self.images[idx],
            self.labels[idx],
            classes=self.classes,
            mean=self.mean,
            std=self.std,
            boxes=pick(self.boxes),
            masks=pick(self.masks),
            attributes=pick(self.attributes),
            attribute_names=self.attribute_names,
            name=self.name,
        )

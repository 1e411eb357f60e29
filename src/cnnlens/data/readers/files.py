"""Image files on disk, loaded lazily: the shared base of the ``folder``, ``celeba`` and
``imagenet-val`` readers.

A :class:`FileDataset` keeps only paths, labels and the ground truth (boxes, attributes) in
memory; each image is opened with Pillow when accessed, converted to RGB, optionally centre-cropped
to a square, resized bilinearly to ``size`` x ``size`` and returned as float32 ``[3,H,W]`` in
[0, 1]. A file Pillow cannot read raises a :class:`~cnnlens.errors.DataError` naming it when it is
accessed; :meth:`FileDataset.verify` opens every file up front.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...errors import DataError
from ..base import ImageDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
STATS_IMAGES = 500


def is_image(path: Path) -> bool:
    """Whether ``path`` is a visible file with an image extension (any case)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_image(path: Path, size: int, crop: bool = False) -> torch.Tensor:
    """One image as float32 ``[3,size,size]`` in [0, 1]; DataError naming ``path`` if unreadable."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        if crop:
            w, h = rgb.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            rgb = rgb.crop((left, top, left + side, top + side))
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file is missing") from e
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: Pillow cannot read this image ({e})") from e
    array = np.asarray(rgb, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file is missing") from e
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: Pillow cannot read this image ({e})") from e


class FileDataset(ImageDataset):
    """Images stored as files, loaded on access (see the module docstring).

    ``mean``/``std`` default to the per-channel statistics of up to 500 evenly spaced images
    (deterministic). ``all_boxes`` (one ``[k,4]`` int64 tensor per image) and ``all_box_labels``
    (``[k]``) hold every object of images that have several.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: torch.Tensor,
        *,
        classes: Sequence[str],
        size: int,
        crop: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        boxes: torch.Tensor | None = None,
        all_boxes: list[torch.Tensor] | None = None,
        all_box_labels: list[torch.Tensor] | None = None,
        attributes: torch.Tensor | None = None,
        attribute_names: Sequence[str] | None = None,
        name: str = "files",
    ) -> None:
        if len(paths) == 0:
            raise DataError(f"{name}: the data set is empty")
        if len(labels) != len(paths):
            raise DataError(f"{name}: {len(paths)} images but {len(labels)} labels")
        if not isinstance(size, int) or size < 1:
            raise DataError(f"{name}: size must be a positive int, got {size!r}")
        self.paths = [Path(p) for p in paths]
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.classes = list(classes)
        self.size, self.crop, self.name = size, crop, name
        self.boxes, self.all_boxes, self.all_box_labels = boxes, all_boxes, all_box_labels
        self.attributes = attributes
        self.attribute_names = list(attribute_names) if attribute_names is not None else None
        if int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes):
            raise DataError(f"{name}: labels must lie in [0, {len(self.classes)})")
        if mean is None or std is None:
            mean, std = self.statistics()
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def raw(self, index: int) -> torch.Tensor:
        return load_image(self.paths[index], self.size, self.crop)

    def statistics(self, max_images: int = STATS_IMAGES) -> tuple[list[float], list[float]]:
        """Per-channel mean and std over up to ``max_images`` evenly spaced images."""
        count = min(len(self), max_images)
        idx = torch.linspace(0, len(self) - 1, count).round().long().unique()
        total = torch.zeros(3, dtype=torch.float64)
        squares = torch.zeros(3, dtype=torch.float64)
        for i in idx.tolist():
            image = self.raw(i).double()
            total += image.mean(dim=(1, 2))
            squares += image.pow(2).mean(dim=(1, 2))
        mean = total / len(idx)
        std = (squares / len(idx) - mean.pow(2)).clamp_min(0).sqrt().clamp_min(1e-3)
        return mean.tolist(), std.tolist()

    def verify(self) -> None:
        """Open and decode every image; DataError listing the unreadable ones."""
        bad = []
        for path in self.paths:
            try:
                with Image.open(path) as image:
                    image.load()
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                bad.append(f"{path} ({e})")
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise DataError(
                f"{self.name}: {len(bad)} unreadable image(s): {'; '.join(bad[:5])}{more}"
            )

    def subset(self, indices: Sequence[int] | torch.Tensor) -> FileDataset:
        """A new data set with the chosen images and their ground truth."""
        idx = self._indices(indices)
        keep = idx.tolist()

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[idx]

        def pick_list(items: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
            return None if items is None else [items[i] for i in keep]

        return FileDataset(
            [self.paths[i] for i in keep],
            self.labels[idx],
            classes=self.classes,
            size=self.size,
            crop=self.crop,
            mean=self.mean,
            std=self.std,
            boxes=pick(self.boxes),
            all_boxes=pick_list(self.all_boxes),
            all_box_labels=pick_list(self.all_box_labels),
            attributes=pick(self.attributes),
            attribute_names=self.attribute_names,
            name=self.name,
        )

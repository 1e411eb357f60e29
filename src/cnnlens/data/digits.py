"""``digits``: scikit-learn's 8x8 handwritten digits (real data, ships offline).

1,797 greyscale images of the digits 0-9 (UCI optical recognition data set),
upsampled to 32x32 (bilinear) so the CIFAR-style nets fit, as 1 channel (or
3 with ``channels=3``). The split is fixed and stratified: 1,437 train /
360 test images (``test_size=0.2``, ``random_state=0``); ``val`` is the test
split.
"""

from __future__ import annotations

import functools

import torch

from ..errors import DataError
from . import register
from .base import TensorDataset

CLASSES = [str(d) for d in range(10)]


@functools.lru_cache(maxsize=4)
def _split(size: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images).float()[:, None] / 16.0
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear")
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(digits.target).long()
    idx = torch.arange(len(labels)).numpy()
    train_idx, test_idx = train_test_split(
        idx, test_size=0.2, random_state=0, stratify=labels.numpy()
    )
    return images, labels, torch.from_numpy(train_idx), torch.from_numpy(test_idx)


class DigitsDataset(TensorDataset):
    """One split of ``digits`` (see the module docstring)."""

    def __init__(self, split: str = "train", *, size: int = 32, channels: int = 1) -> None:
        if split not in ("train", "val", "test"):
            raise DataError(f"digits has splits train/val/test, not {split!r}")
        if channels not in (1, 3):
            raise DataError(f"digits: channels must be 1 or 3, got {channels}")
        images, labels, train_idx, test_idx = _split(size)
        idx = train_idx if split == "train" else test_idx
        imgs = images[idx]
        if channels == 3:
            imgs = imgs.expand(-1, 3, -1, -1).contiguous()
        super().__init__(
            imgs,
            labels[idx],
            classes=CLASSES,
            mean=(0.2020,) * channels,
            std=(0.3240,) * channels,
            name="digits",
        )
        self.split = split


@register("digits", "scikit-learn's 8x8 handwritten digits, 32x32 (offline, real data)")
def load_digits(split: str = "train", **options) -> DigitsDataset:
    return DigitsDataset(split, **options)

"""MNIST and Fashion-MNIST from their idx files (plain or ``.gz``).

Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte`` (``-idx`` or ``.idx`` spelling, optionally ending in ``.gz``), in
``path`` or ``path/raw``, ``path/MNIST/raw``, ``path/FashionMNIST/raw``. An idx file is a
big-endian header (magic 2051 = unsigned bytes in 3 dimensions for images, 2049 = 1 dimension for
labels, then one uint32 per dimension) followed by the bytes; the reader checks the magic, that
the size matches the dimensions and that images and labels agree in number.

``size=32`` (default) resizes the 28x28 digits bilinearly to 32x32 so CIFAR-style nets fit;
``size=None`` keeps 28x28. ``channels=3`` repeats the grey channel. There is no validation
split: ``val`` gives the test set. Normalisation uses the standard per-data-set mean/std.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from ...errors import DataError
from .. import register
from ..base import TensorDataset
from .common import check_split, require_path

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
SUBDIRS = ["", "raw", "MNIST/raw", "FashionMNIST/raw"]


def find_file(name: str, root: Path, stem: str, kind: str) -> Path:
    """The idx file ``<stem>-<kind>`` in any accepted spelling and folder."""
    spellings = [f"{stem}-{kind}", f"{stem}.{kind}"]
    for sub in SUBDIRS:
        for spelling in spellings:
            for suffix in ("", ".gz"):
                candidate = root / sub / (spelling + suffix)
                if candidate.is_file():
                    return candidate
    raise DataError(f"{name}: {stem}-{kind}[.gz] not found in {root} (or its raw/ subfolder)")


def read_idx(file: Path, magic: int) -> np.ndarray:
    """The array stored in an idx file of unsigned bytes, checked against ``magic``."""
    try:
        data = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{file}: cannot read ({e})") from e
    if len(data) < 4:
        raise DataError(f"{file}: {len(data)} bytes is too short for an idx header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{file}: magic number {found}, expected {magic}; wrong kind of idx file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{file}: {len(data)} bytes is too short for a {ndim}-d idx header")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(
            f"{file}: {len(data)} bytes, but dimensions {dims} need {expected}; truncated?"
        )
    if dims[0] == 0:
        raise DataError(f"{file}: holds no items")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def resize(images: torch.Tensor, size: int, chunk: int = 8192) -> torch.Tensor:
    """uint8 ``[N,1,H,W]`` resized bilinearly to ``size``x``size`` (chunked to bound memory)."""
    out = []
    for part in images.split(chunk):
        scaled = torch.nn.functional.interpolate(part.float(), size=(size, size), mode="bilinear")
        out.append(scaled.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def _load(
    name: str, classes: list[str], stats: tuple[float, float], split: str,
    path: str | Path | None, size: int | None, channels: int,
) -> TensorDataset:  # fmt: skip
    check_split(name, split)
    if size is not None and size < 1:
        raise DataError(f"{name}: size must be a positive int or None, got {size}")
    if channels not in (1, 3):
        raise DataError(f"{name}: channels must be 1 or 3, got {channels}")
    root = require_path(name, path)
    stem = "train" if split == "train" else "t10k"
    image_file = find_file(name, root, f"{stem}-images", "idx3-ubyte")
    label_file = find_file(name, root, f"{stem}-labels", "idx1-ubyte")
    images = read_idx(image_file, IMAGES_MAGIC)
    labels = read_idx(label_file, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{image_file} holds {len(images)} images but {label_file} {len(labels)} labels"
        )
    if labels.max() >= len(classes):
        raise DataError(f"{label_file}: label {int(labels.max())} is not in 0..{len(classes) - 1}")
    x = torch.from_numpy(images.copy())[:, None]
    if size is not None and size != x.shape[-1]:
        x = resize(x, size)
    if channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    mean, std = stats
    return TensorDataset(
        x,
        torch.from_numpy(labels.astype(np.int64)),
        classes=classes,
        mean=(mean,) * channels,
        std=(std,) * channels,
        name=name,
    )


@register("mnist", "MNIST handwritten digits from idx files on disk (optionally .gz)")
def load_mnist(
    split: str = "train", path: str | Path | None = None, size: int | None = 32, channels: int = 1
) -> TensorDataset:
    """MNIST from its idx files; see the module docstring."""
    return _load("mnist", MNIST_CLASSES, (0.1307, 0.3081), split, path, size, channels)


@register("fashion-mnist", "Fashion-MNIST from idx files on disk (optionally .gz)")
def load_fashion_mnist(
    split: str = "train", path: str | Path | None = None, size: int | None = 32, channels: int = 1
) -> TensorDataset:
    """Fashion-MNIST from its idx files; see the module docstring."""
    return _load("fashion-mnist", FASHION_CLASSES, (0.2860, 0.3530), split, path, size, channels)

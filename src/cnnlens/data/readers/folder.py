"""ImageFolder trees: ``root/<class>/**/*.png|jpg|jpeg|bmp|webp``, one folder per class.

Classes are the class folder names, sorted. Splits: when ``root/train`` and ``root/val`` or
``root/test`` exist, each split reads its own folder (``val`` falls back to ``test`` and back),
with the class list taken from all split folders together so labels agree across splits;
otherwise the whole tree is one set returned for **every** split. Images are loaded lazily
(:class:`~.files.FileDataset`), resized to ``size`` x ``size`` (default 32) without cropping;
``mean``/``std`` are computed from up to 500 images unless given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ...errors import DataError
from .. import register
from .common import check_split, require_path
from .files import IMAGE_EXTENSIONS, FileDataset, is_image


def class_dirs(root: Path) -> list[Path]:
    """The visible sub-folders of ``root``."""
    return [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]


def split_root(root: Path, split: str) -> tuple[Path, list[Path]]:
    """The folder holding ``split`` and every split folder (all sharing one class list)."""
    others = [root / s for s in ("val", "test") if (root / s).is_dir()]
    if not (root / "train").is_dir() or not others:
        return root, [root]
    order = {"train": ["train"], "val": ["val", "test"], "test": ["test", "val"]}[split]
    chosen = next(root / s for s in order if (root / s).is_dir())
    return chosen, [root / "train", *others]


@register("folder", "ImageFolder tree on disk: root/<class>/*.png|jpg, optional train/val/test")
def load_folder(
    split: str = "train",
    path: str | Path | None = None,
    size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> FileDataset:
    """An ImageFolder tree; see the module docstring."""
    check_split("folder", split)
    root, split_dirs = split_root(require_path("folder", path), split)
    classes = sorted({d.name for s in split_dirs for d in class_dirs(s)})
    if not classes:
        raise DataError(f"folder: {root} has no class folders (expected {root}/<class>/<image>)")
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image(p))
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DataError(
            f"folder: no images ({'/'.join(IMAGE_EXTENSIONS)}) in the class folders of {root}"
        )
    return FileDataset(
        paths,
        torch.tensor(labels, dtype=torch.long),
        classes=classes,
        size=size,
        mean=mean,
        std=std,
        name="folder",
    )

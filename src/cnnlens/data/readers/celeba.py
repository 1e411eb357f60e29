"""CelebA (aligned and cropped faces) with its 40 binary attributes.

Layout under ``path``: ``img_align_celeba/`` (the images; the Kaggle copy's nested
``img_align_celeba/img_align_celeba/`` also works), ``list_attr_celeba.txt`` (line 1: number of
images; line 2: the 40 attribute names; then ``filename v1 .. v40`` with values 1 / -1) and
``list_eval_partition.txt`` (``filename 0|1|2`` = train / val / test).

The data set has ``attributes`` ``[N,40]`` bool and ``attribute_names``; its label is one
attribute, ``target="Smiling"`` (default: the first attribute), with classes
``["not Smiling", "Smiling"]``. Images are loaded lazily, centre-cropped to a square and resized to
``size`` (default 64); ``mean``/``std`` are computed from up to 500 images unless given. A
malformed line raises a DataError naming the file and line number.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ...errors import DataError
from .. import register
from .common import check_split, read_text_lines, require_path
from .files import FileDataset

PARTITIONS = {"train": 0, "val": 1, "test": 2}


def read_attributes(file: Path) -> tuple[list[str], dict[str, list[bool]]]:
    """Attribute names and ``filename -> values`` from ``list_attr_celeba.txt``."""
    lines = read_text_lines(file)
    if len(lines) < 2:
        raise DataError(f"{file}: expected a count line and an attribute-name line")
    try:
        count = int(lines[0])
    except ValueError as e:
        raise DataError(f"{file}:1: expected the number of images, got {lines[0]!r}") from e
    names = lines[1].split()
    if not names:
        raise DataError(f"{file}:2: expected the attribute names, got an empty line")
    rows: dict[str, list[bool]] = {}
    for number, line in enumerate(lines[2:], start=3):
        if not line:
            continue
        fields = line.split()
        if len(fields) != len(names) + 1 or any(v not in ("1", "-1") for v in fields[1:]):
            raise DataError(
                f"{file}:{number}: expected a filename and {len(names)} values of 1 or -1, "
                f"got {line[:80]!r}"
            )
        rows[fields[0]] = [v == "1" for v in fields[1:]]
    if len(rows) != count:
        raise DataError(f"{file}: line 1 announces {count} images but {len(rows)} are listed")
    return names, rows


def read_partition(file: Path, split: str) -> list[str]:
    """The filenames in ``split`` from ``list_eval_partition.txt``."""
    wanted = str(PARTITIONS[split])
    chosen = []
    for number, line in enumerate(read_text_lines(file), start=1):
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataError(f"{file}:{number}: expected 'filename 0|1|2', got {line[:80]!r}")
        if fields[1] == wanted:
            chosen.append(fields[0])
    if not chosen:
        raise DataError(f"{file}: no images in the {split} partition ({wanted})")
    return chosen


@register("celeba", "CelebA aligned faces on disk with 40 binary attributes (label: one of them)")
def load_celeba(
    split: str = "train",
    path: str | Path | None = None,
    target: str | None = None,
    size: int = 64,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> FileDataset:
    """CelebA with one attribute as the label; see the module docstring."""
    check_split("celeba", split)
    root = require_path("celeba", path)
    images = root / "img_align_celeba"
    if (images / "img_align_celeba").is_dir():
        images = images / "img_align_celeba"
    if not images.is_dir():
        raise DataError(f"celeba: image folder {images} is missing")
    attr_file = root / "list_attr_celeba.txt"
    names, rows = read_attributes(attr_file)
    target = names[0] if target is None else target
    if target not in names:
        raise DataError(f"celeba: target {target!r} is not an attribute; known: {', '.join(names)}")
    part_file = root / "list_eval_partition.txt"
    files = read_partition(part_file, split)
    missing = [f for f in files if f not in rows]
    if missing:
        raise DataError(
            f"{part_file}: {len(missing)} image(s) have no attributes in {attr_file}, "
            f"e.g. {missing[0]!r}"
        )
    attributes = torch.tensor([rows[f] for f in files], dtype=torch.bool)
    return FileDataset(
        [images / f for f in files],
        attributes[:, names.index(target)].long(),
        classes=[f"not {target}", target],
        size=size,
        crop=True,
        mean=mean,
        std=std,
        attributes=attributes,
        attribute_names=names,
        name="celeba",
    )

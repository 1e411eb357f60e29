"""CIFAR-10 and CIFAR-100, *binary* version (no pickles are read).

CIFAR-10 (``cifar-10-batches-bin``): ``data_batch_1.bin`` .. ``data_batch_5.bin`` (train),
``test_batch.bin`` (test), ``batches.meta.txt`` (10 class names, one a line). Each record is
1 label byte followed by 3,072 pixel bytes (1,024 red, 1,024 green, 1,024 blue, row-major 32x32).

CIFAR-100 (``cifar-100-binary``): ``train.bin``, ``test.bin``; each record is 2 label bytes
(coarse, fine) and 3,072 pixel bytes; names in ``fine_label_names.txt`` and
``coarse_label_names.txt``. ``label="fine"`` (default, 100 classes) or ``"coarse"`` (20).

``path`` may be the folder holding the files or its parent. CIFAR has no validation split:
``split="val"`` gives the test set (as the embedded ``digits`` set does). Images are held in
memory as uint8 ``[N,3,32,32]``, normalised with the standard per-channel CIFAR mean/std.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import DataError
from .. import register
from ..base import TensorDataset
from .common import check_split, find_dir, read_text_lines, require_path

PIXELS = 3 * 32 * 32
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def read_records(file: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``[n, label_bytes]`` and images ``[n,3,32,32]`` uint8 from one ``.bin`` file."""
    record = label_bytes + PIXELS
    try:
        data = file.read_bytes()
    except FileNotFoundError as e:
        raise DataError(f"{file}: file is missing") from e
    except OSError as e:
        raise DataError(f"{file}: cannot read ({e})") from e
    if len(data) == 0 or len(data) % record:
        raise DataError(
            f"{file}: {len(data)} bytes is not a whole number of {record}-byte records "
            f"({len(data) // record} records and {len(data) % record} bytes left over); "
            "the file is truncated or not a CIFAR binary file"
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    return rows[:, :label_bytes], rows[:, label_bytes:].reshape(-1, 3, 32, 32)


def read_names(file: Path, count: int) -> list[str]:
    """``count`` class names from a names file (blank lines ignored)."""
    names = [line for line in read_text_lines(file) if line]
    if len(names) != count:
        raise DataError(f"{file}: expected {count} class names, found {len(names)}")
    return names


def _build(
    files: list[Path], label_bytes: int, column: int, classes: list[str], **kwargs
) -> TensorDataset:
    labels, images = [], []
    for file in files:
        lab, img = read_records(file, label_bytes)
        bad = lab[:, column] >= len(classes)
        if bad.any():
            raise DataError(
                f"{file}: record {int(np.argmax(bad))} has label {int(lab[bad, column][0])}, "
                f"expected < {len(classes)}; not a file of this data set?"
            )
        labels.append(lab[:, column])
        images.append(img)
    return TensorDataset(
        torch.from_numpy(np.concatenate(images)),
        torch.from_numpy(np.concatenate(labels).astype(np.int64)),
        classes=classes,
        **kwargs,
    )


@register("cifar10", "CIFAR-10 binary version on disk (cifar-10-batches-bin), 10 classes")
def load_cifar10(split: str = "train", path: str | Path | None = None) -> TensorDataset:
    """CIFAR-10 from its binary files; see the module docstring."""
    check_split("cifar10", split)
    root = find_dir(
        "cifar10", require_path("cifar10", path), ["test_batch.bin"], ["cifar-10-batches-bin"]
    )
    if split == "train":
        files = [root / f"data_batch_{i}.bin" for i in range(1, 6)]
    else:
        files = [root / "test_batch.bin"]
    classes = read_names(root / "batches.meta.txt", 10)
    return _build(files, 1, 0, classes, mean=CIFAR10_MEAN, std=CIFAR10_STD, name="cifar10")


@register("cifar100", "CIFAR-100 binary version on disk (cifar-100-binary), 100 or 20 classes")
def load_cifar100(
    split: str = "train", path: str | Path | None = None, label: str = "fine"
) -> TensorDataset:
    """CIFAR-100 from its binary files; ``label="fine"`` (100) or ``"coarse"`` (20 classes)."""
    check_split("cifar100", split)
    if label not in ("fine", "coarse"):
        raise DataError(f"cifar100: label must be 'fine' or 'coarse', got {label!r}")
    root = find_dir("cifar100", require_path("cifar100", path), ["test.bin"], ["cifar-100-binary"])
    file = root / ("train.bin" if split == "train" else "test.bin")
    count = 100 if label == "fine" else 20
    classes = read_names(root / f"{label}_label_names.txt", count)
    column = 1 if label == "fine" else 0
    return _build([file], 2, column, classes, mean=CIFAR100_MEAN, std=CIFAR100_STD, name="cifar100")

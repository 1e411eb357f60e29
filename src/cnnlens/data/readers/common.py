"""Small helpers every reader shares: split names, finding the data folder, reading text files.

Each helper turns a missing or unreadable file into a :class:`~cnnlens.errors.DataError` that
names the path, so readers never leak a bare ``OSError`` or ``KeyError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...errors import DataError

SPLITS = ("train", "val", "test")


def check_split(name: str, split: str, allowed: Sequence[str] = SPLITS) -> str:
    """``split`` itself if ``allowed``, else a DataError listing the splits."""
    if split not in allowed:
        raise DataError(f"{name} has splits {'/'.join(allowed)}, not {split!r}")
    return split


def require_path(name: str, path: str | Path | None) -> Path:
    """The existing path a reader was given; DataError if none was given or it is missing."""
    if path is None or str(path) == "":
        raise DataError(f"{name} reads data on disk: give its folder, e.g. load('{name}:/data/x')")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{name}: {p} does not exist")
    if not p.is_dir():
        raise DataError(f"{name}: {p} is not a folder")
    return p


def find_dir(name: str, root: Path, marker: Sequence[str], subdirs: Sequence[str]) -> Path:
    """``root`` or the first ``root/subdir`` holding any of the ``marker`` files."""
    for candidate in [root, *(root / s for s in subdirs)]:
        if any((candidate / m).exists() for m in marker):
            return candidate
    looked = ", ".join(str(root / s) for s in ["", *subdirs])
    raise DataError(f"{name}: none of {', '.join(marker)} found in {looked}")


def read_text_lines(path: Path) -> list[str]:
    """The lines of a text file, stripped, blank lines kept (line numbers stay right)."""
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError as e:
        raise DataError(f"{path}: file is missing") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read text file ({e})") from e

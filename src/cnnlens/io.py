"""Atomic writes: a killed job leaves either the old file or the new one.

Every file cnnlens writes (checkpoints, JSON, reports, result tables) goes
through :func:`atomic_path`: content is written to a temporary file in the
same folder, flushed to disk, then renamed over the destination.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; use normal permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_tensors(
    path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None
) -> Path:
    """Write a safetensors file atomically (tensors made contiguous, on the CPU)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=metadata)
    return Path(path)


def check_writable_folder(path: str | os.PathLike, *, option: str = "--out") -> Path:
    """Check that folder ``path`` can be created (or exists) and written, creating nothing.

    Commands call this before their work starts, so a bad ``--out`` fails in
    seconds with a message naming the path, not after an hour of work; the
    test file goes into the nearest folder that exists and is removed at once.
    """
    from .errors import InputError

    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())  # "." or "/" at last
    if not existing.is_dir():
        what = "is" if existing == path else f"cannot be created: {existing} is"
        raise InputError(f"{option} {path} {what} a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        where = "is not writable" if existing == path else f"cannot be created in {existing}"
        raise InputError(f"{option} {path} {where}: {exc.strerror or exc}") from None
    return path

"""Resolve a requested file name inside the served folder, or refuse it.

The explorer serves files of one folder only. A request is refused when it could name
anything else: an absolute path, a ``..`` part, a backslash, a NUL, a ``%`` left after
the URL was decoded once (double encoding), a hidden part (``.git``), or a path whose real
location (symlinks followed) is not under the folder. Only plain files with a known,
harmless suffix are served.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..errors import InputError

SUFFIXES = {
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".json": "application/json",
    ".csv": "text/csv; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}


class Refused(InputError):
    """A requested path that could lead outside the served folder (HTTP 403)."""


def resolve_inside(root: str | Path, requested: str) -> Path:
    """The file ``requested`` (a URL path, already decoded once) names under ``root``.

    Raises :class:`Refused` for a name that could escape ``root`` and
    :class:`FileNotFoundError` for a safe name with no plain file (or an unknown suffix).
    """
    if not requested or any(c in requested for c in ("\\", "\x00", "%")):
        raise Refused(f"refused path {requested!r}: backslash, NUL or encoded characters")
    pure = PurePosixPath(requested)
    if pure.is_absolute() or requested.startswith("/") or ":" in pure.parts[0]:
        raise Refused(f"refused path {requested!r}: absolute paths are not served")
    if any(part in ("..", ".") or part.startswith(".") for part in pure.parts):
        raise Refused(f"refused path {requested!r}: '..' and hidden parts are not served")
    base = Path(root).resolve(strict=True)
    target = (base / Path(*pure.parts)).resolve()
    if not target.is_relative_to(base):
        raise Refused(f"refused path {requested!r}: it leads outside the served folder")
    if not target.is_file() or target.suffix.lower() not in SUFFIXES:
        raise FileNotFoundError(requested)
    return target


def media_type(path: Path) -> str:
    return SUFFIXES[path.suffix.lower()]

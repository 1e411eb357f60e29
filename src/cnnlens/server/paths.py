"""Resolve a requested file name inside the served folder, or refuse it with its reason.

The explorer serves files of one folder only. A request is refused (HTTP 403), with the
rule it breaks, when it could name anything else: a NUL, a backslash, a ``%xx`` escape
left after the URL was decoded once (double encoding, e.g. ``%252e%252e%252f``), an
absolute path, a ``..`` part, a hidden part (``.git``), or a path whose real location
(symlinks followed) is not under the folder; and when it names a file of a type that is
not served. A safe name with no file behind it is "not found" (HTTP 404).
"""

from __future__ import annotations

import re
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
    """A requested path that is not served: it could lead outside the folder, or names a
    type of file that is not served (HTTP 403)."""


_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def resolve_inside(root: str | Path, requested: str) -> Path:
    """The file ``requested`` (a URL path, already decoded once) names under ``root``.

    Raises :class:`Refused` with the rule the name breaks, and
    :class:`FileNotFoundError` (its message the reason) for a safe name with no file.
    """

    def refuse(reason: str) -> Refused:
        return Refused(f"refused path {requested[:200]!r}: {reason}")

    if "\x00" in requested:
        raise refuse("a NUL character (%00) is never part of a file name")
    if "\\" in requested:
        raise refuse("a backslash (%5C) is not a path separator here; use '/'")
    if _ESCAPE.search(requested):
        raise refuse("it is URL-encoded twice (a '%xx' escape is left after decoding)")
    pure = PurePosixPath(requested)
    if not requested or pure.is_absolute() or ":" in pure.parts[0]:
        raise refuse("absolute paths are not served; name a file inside the served folder")
    if ".." in pure.parts:
        raise refuse("'..' leads outside the served folder")
    if any(part.startswith(".") for part in pure.parts):
        raise refuse("hidden files and folders (a part starting with '.') are not served")
    base = Path(root).resolve(strict=True)
    target = (base / Path(*pure.parts)).resolve()
    if not target.is_relative_to(base):
        raise refuse("a symbolic link to a place outside the served folder")
    if not target.exists():
        raise FileNotFoundError(f"no file {requested[:200]!r} in the served folder")
    if not target.is_file():
        raise FileNotFoundError(f"{requested[:200]!r} is a folder, not a file")
    if target.suffix.lower() not in SUFFIXES:
        kind = f"'{target.suffix}'" if target.suffix else "without a suffix"
        raise refuse(
            f"files {'of type ' if target.suffix else ''}{kind} are not served "
            f"(only {', '.join(sorted(SUFFIXES))})"
        )
    return target


def media_type(path: Path) -> str:
    return SUFFIXES[path.suffix.lower()]

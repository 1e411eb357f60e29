"""Old spellings of renamed options, accepted for one release with a note.

The commands share one vocabulary (``--methods``, ``--images``, ``--out``; issue 29): where
an option was renamed, the old spelling stays as a hidden option whose value, when given,
is taken for the new one, and a one-line note on stderr says what to write instead.
"""

from __future__ import annotations

import typer

from ..errors import InputError


def renamed(old: str, new: str, old_value, new_value, new_default):
    """The value to use for ``new`` given ``old``'s (``None`` when not given): the old one,
    with a note, when only it was given; an :class:`InputError` when both were."""
    if old_value is None:
        return new_value
    if new_value != new_default:
        raise InputError(f"{old} is the old spelling of {new}: give only {new}")
    typer.echo(f"note: {old} is now {new}; the old spelling works until the next release", err=True)
    return old_value

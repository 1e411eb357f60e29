"""One exception family for everything a user can get wrong.

Every error cnnlens raises on bad input is a :class:`CnnlensError`; the
subclass says which kind of input was wrong and the message names the
offending value and what was expected, so a user can act on it.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message ("" if none): torch's
    errors run over several lines, a message for the user takes one."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")


class CnnlensError(Exception):
    """Base class of every error cnnlens raises on bad input."""


class InputError(CnnlensError, ValueError):
    """An input tensor or argument has the wrong shape, dtype or value."""


class LayerError(CnnlensError, LookupError):
    """A named layer is missing, or a model lacks a part a method needs."""


class TargetError(CnnlensError, ValueError):
    """A target class is out of range or has the wrong shape."""


class CheckpointError(CnnlensError, OSError):
    """A saved model is corrupt, incomplete or does not fit its architecture."""


class DataError(CnnlensError, OSError):
    """A data set on disk is missing, truncated, empty or unreadable."""


class StoreError(CnnlensError, OSError):
    """A file of a job's store (job.json, manifest.json, a Zarr array, a Parquet table)
    is missing, truncated or not what cnnlens writes."""


class ConfigError(CnnlensError, ValueError):
    """Hyperparameters that contradict each other or are out of range."""

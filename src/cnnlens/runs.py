"""Reuse a run folder by identity, or refuse to train over one made otherwise.

Every training job (``train``, ``train-vae``, ``drib train``, ``attributes
train``) keeps ``out/run.json`` with the identity of what it trained (data,
architecture, options, configuration) and ``out/model``. :func:`saved_run` is
the one place that decides, before any work, what a second call does with such
a folder: reuse an identical finished run, or refuse a folder that holds a run
with other settings or an unreadable record unless the caller says
``overwrite`` (the CLI's ``--overwrite``), as ``train --resume`` refuses a
checkpoint of another configuration. :func:`load_saved` turns a saved model
that cannot be read into the same one-line refusal. :func:`measured` does the same
for a measurement: a JSON result reused while its key is the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .errors import CheckpointError, CnnlensError, ConfigError
from .io import write_json

T = TypeVar("T")
OVERWRITE_HINT = "pass --overwrite (overwrite=True) to train over it, or choose another folder"


def differing_keys(saved: object, wanted: object, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON identities differ (``["config.epochs"]``)."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        keys: list[str] = []
        for key in sorted(set(saved) | set(wanted), key=str):
            keys += differing_keys(saved.get(key), wanted.get(key), f"{prefix}{key}.")
        return keys
    return [] if saved == wanted else [prefix.rstrip(".") or "identity"]


def saved_run(out: str | Path, identity: dict, *, overwrite: bool = False) -> dict | None:
    """The record of ``out/run.json`` if it is a finished run of ``identity`` (reused);
    ``None`` when there is none. A run with other settings is a
    :class:`~cnnlens.errors.ConfigError` and a record that cannot be read a
    :class:`~cnnlens.errors.CheckpointError`, unless ``overwrite``: then ``None``, and the
    caller trains over it (a finished run of the same settings is still reused). Reads
    only; creates nothing."""
    run_file = Path(out) / "run.json"
    if not run_file.exists():
        return None
    try:
        saved = json.loads(run_file.read_text())
    except (OSError, ValueError) as exc:
        if overwrite:
            return None
        raise CheckpointError(f"{run_file} cannot be read ({exc}); {OVERWRITE_HINT}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("identity"), dict):
        if overwrite:
            return None
        raise CheckpointError(f"{run_file} is not a run record (no identity); {OVERWRITE_HINT}")
    wanted = json.loads(json.dumps(identity, default=str))
    if saved["identity"] != wanted:
        if overwrite:
            return None
        keys = differing_keys(saved["identity"], wanted)
        shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
        raise ConfigError(f"{out} holds a run with other settings ({shown}); {OVERWRITE_HINT}")
    if overwrite and not (Path(out) / "model" / "model.json").is_file():
        return None  # the record of a run whose model is gone: train it again
    return saved


def load_saved(folder: str | Path, load: Callable[[Path], T]) -> T:
    """``load(folder)`` for a reused run; a model that cannot be read (missing, truncated,
    of another architecture) is a :class:`~cnnlens.errors.CheckpointError` naming it."""
    try:
        return load(Path(folder))
    except (CnnlensError, OSError, RuntimeError, ValueError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"the saved model of the run in {Path(folder).parent} cannot be read ({reason}); "
            f"{OVERWRITE_HINT}"
        ) from None


def measured(path: str | Path, key: dict, compute: Callable[[], dict]) -> dict:
    """A measurement reused by identity: the result saved in ``path`` under ``key``, or
    ``compute()`` saved there (atomically). Studies cache their expensive results with it
    (a report's second run only draws).

    The key is compared after a JSON round trip, as it is stored (tuples become lists); a
    damaged or stale file is measured again and replaced. A fresh result is returned as it
    is stored too, so the first report and a later one draw from the same data.
    """
    path = Path(path)
    key = json.loads(json.dumps(key))
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                return saved["result"]
        except (json.JSONDecodeError, OSError, KeyError, AttributeError):
            pass
    write_json(path, {"key": key, "result": compute()})
    return json.loads(path.read_text())["result"]

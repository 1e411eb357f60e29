"""A report section's cache: an expensive measurement saved as JSON beside the run,
reused by a later report while its key (the run's identity and the settings) is the same."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def cached_json(path: str | Path, key: dict, compute: Callable[[], dict]) -> dict:
    """The result saved in ``path`` under ``key``, or ``compute()`` saved there (atomically).

    The key is compared after a JSON round trip, as it is stored (tuples become lists); a
    damaged or stale file is measured again and replaced. A fresh result is returned as it
    is stored too, so the first report and a later one draw from the same data.
    """
    from ..io import write_json

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

"""Open a run folder written by :func:`~.training.attribute_run`: its network and data."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import CheckpointError
from .training import AttributeRun, load_attribute_network, load_splits


def open_run(run: str | Path) -> AttributeRun:
    """The trained network of ``run`` with the train/test splits it was made with."""
    run = Path(run)
    run_file = run / "run.json"
    if not run_file.is_file() or not (run / "model" / "model.json").is_file():
        raise CheckpointError(
            f"{run} is not an attribute-network run: expected run.json and model/ "
            "(written by cnnlens attributes train)"
        )
    try:
        saved = json.loads(run_file.read_text())
        identity = saved["identity"]
        accuracy = {k: float(v) for k, v in saved["accuracy"].items()}
        data, size = str(identity["data"]), identity["size"]
        n_train, n_test = int(identity["n_train"]), int(identity["n_test"])
        _ = int(identity["config"]["epochs"]), int(identity["config"]["seed"])  # predictability
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{run_file} is not a run record: {exc!r}") from None
    train, test = load_splits(data, size=size, n_train=n_train, n_test=n_test)
    model = load_attribute_network(run / "model")
    return AttributeRun(model, train, test, saved.get("history", []), accuracy, True, 0.0, identity)

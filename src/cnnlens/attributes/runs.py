"""Open a run folder written by :func:`~.training.attribute_run`: its network and data."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError
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
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{run_file} is not a run record: {exc}") from None
    train, test = load_splits(
        identity["data"],
        size=identity["size"],
        n_train=identity["n_train"],
        n_test=identity["n_test"],
    )
    model = load_attribute_network(run / "model")
    return AttributeRun(model, train, test, saved.get("history", []), accuracy, True, 0.0, identity)

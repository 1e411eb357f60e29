"""What the CLI's commands, jobs, the report and the explorer share above the papers'
packages: :func:`open_model` opens a saved model whichever package made it (a classifier,
a DRIB-gated or pruned network, a decomposed classifier, an attribute network) and
:func:`check_device`. (IBA's layer statistics moved to the method: its ``prepare``.)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import checkpoint
from .errors import CheckpointError, InputError, first_line


def check_device(device: str) -> torch.device:
    """``device`` as a :class:`torch.device` this machine can use, else an InputError."""
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as exc:  # a CPU-only build asserts on "cuda"
        raise InputError(f"device {device!r} is not usable here: {first_line(exc)}") from None
    return dev


def open_model(path: str | Path, *, device: str | None = None) -> nn.Module:
    """Load a saved model from its folder or from a run folder that holds ``model/``
    (a decomposed classifier saved by ``cnnlens decompose --retrain`` included)."""
    path = Path(path)
    if device is not None:
        check_device(device)
    if not (path / "model.json").is_file() and (path / "model" / "model.json").is_file():
        path = path / "model"
    if (path / "model.json").is_file():
        if (checkpoint.read_meta(path).get("arch") or {}).get("name") in (
            "attribute-net",
            "plain-attribute-cnn",
        ):
            from .attributes.training import load_attribute_network

            return load_attribute_network(path, device=device)
        if "drib" in (checkpoint.read_meta(path).get("extra") or {}):
            from .drib.runs import load_gated

            return load_gated(path, device=device)
        if "pruned" in (checkpoint.read_meta(path).get("extra") or {}):
            from .drib.pruned_models import load_pruned  # a channel-pruned baseline (paper 000)

            return load_pruned(path, device=device)
        if "decomposed" in (checkpoint.read_meta(path).get("extra") or {}):
            from .analysis.decomposed import load_decomposed

            return load_decomposed(path, device=device)
        return checkpoint.load(path, device=device)
    raise CheckpointError(
        f"no saved model in {path}: expected {path / 'model.json'} or {path / 'model/model.json'}"
    )

"""Resumable training state: one folder per finished epoch, switched atomically.

``<out>/checkpoints/epoch-0007/`` holds ``model.safetensors`` (the model's
state dict), ``optim-<group>.safetensors`` (each optimiser's tensors) and
``state.json`` (epoch, history, the optimisers' other fields). The folder is
written under a temporary name and renamed; then ``latest.json`` is replaced
atomically to point at it, and older epoch folders are removed. A kill at any
moment leaves a complete previous state.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..io import save_tensors, write_json


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, entries in rest["scalars"].items():
        state.setdefault(int(idx), {}).update(entries)
    return {"state": state, "param_groups": rest["param_groups"]}


def save_state(
    folder: Path,
    *,
    epoch: int,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    history: list[dict],
    extra: dict,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}"
    tmp = folder / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_tensors(tmp / "model.safetensors", model.state_dict())
    optim_rest = {}
    for group, opt in optimizers.items():
        tensors, rest = _flatten_optimizer(opt.state_dict())
        save_tensors(tmp / f"optim-{group}.safetensors", tensors)
        optim_rest[group] = rest
    write_json(
        tmp / "state.json",
        {"epoch": epoch, "history": history, "optimizers": optim_rest, **extra},
    )
    final = folder / name
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    write_json(folder / "latest.json", {"epoch": epoch, "folder": name})
    for old in folder.glob("epoch-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(folder: Path) -> dict | None:
    """The latest saved state (``None`` if there is none), tensors on the CPU."""
    latest = folder / "latest.json"
    if not latest.exists():
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        pointer = json.loads(latest.read_text())
        where = folder / pointer["folder"]
        state = json.loads((where / "state.json").read_text())
        state["model"] = load_file(str(where / "model.safetensors"))
        state["optimizers"] = {
            group: _unflatten_optimizer(load_file(str(where / f"optim-{group}.safetensors")), rest)
            for group, rest in state["optimizers"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as exc:
        # a truncated or pickled file, a broken state.json: one line, no traceback
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot resume from {folder}: {reason}") from None
    return state

"""Save and load models: ``model.safetensors`` plus ``model.json``.

The JSON records the architecture (``model.arch``: a ``cnnlens.nets`` name
and its arguments), the class names, the input shape and normalisation and
free-form metadata, so :func:`load` rebuilds the model without any pickled code
(DESIGN.md, "Saved models"). Both files are written atomically and the JSON
holds the SHA-256 of the weights, so an interrupted save that left new
weights beside an old JSON is detected. :func:`load_state_dict_file` reads a
user's own ``.safetensors`` or ``.pt`` / ``.pth`` (``torch.load`` with
``weights_only=True``; never a full unpickle) into a given model.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .errors import CheckpointError, ConfigError, InputError
from .io import save_tensors, write_json

FORMAT = "cnnlens-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
_SHOW = 10
NESTED_KEYS = ("state_dict", "model", "model_state_dict")  # where a .pt may nest it


def _keys(keys: Sequence[str]) -> str:
    """``'a', 'b', ... (N in all)`` with at most the first ten keys."""
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:_SHOW])
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOW else f" ({len(keys)})"
    return shown + more


def _floats(name: str, values: Any) -> list[float] | None:
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().flatten().tolist()
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise InputError(f"{name} must be finite numbers, got {out}")
    return out


def _as_shape(values: Any) -> list[int] | None:
    """``[C, H, W]`` as three positive ints, or None when ``values`` is not that."""
    try:
        out = [operator.index(v) for v in values]
    except TypeError:
        return None
    return out if len(out) == 3 and min(out) >= 1 else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save(
    model: nn.Module,
    dir: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
    input_shape: Sequence[int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``dir/model.safetensors`` and ``dir/model.json``; returns ``dir``.

    ``model.arch`` (set by :func:`cnnlens.nets.create`) is stored so :func:`load`
    can rebuild the model; a model without it is saved too, and is loaded
    with ``checkpoint.load(dir, model=...)``. ``input_shape`` ``(C, H, W)`` is the image
    shape the model was trained on, so a data set that does not fit is named
    before any work (:func:`cnnlens.compatibility.check_fits`). ``extra`` must
    be JSON-serialisable.
    """
    dir = Path(dir)
    arch = getattr(model, "arch", None)
    if arch is not None and not (isinstance(arch, Mapping) and "name" in arch):
        raise InputError(f"model.arch must be a dict with 'name' and 'kwargs', got {arch!r}")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "cnnlens_version": __version__,
        "arch": None if arch is None else {"name": arch["name"], "kwargs": arch.get("kwargs", {})},
        "classes": None if classes is None else [str(c) for c in classes],
        "mean": _floats("mean", mean),
        "std": _floats("std", std),
        "input_shape": None if input_shape is None else _as_shape(input_shape),
        "extra": dict(extra or {}),
        "weights": WEIGHTS_FILE,
    }
    if input_shape is not None and meta["input_shape"] is None:
        raise InputError(f"input_shape must be three positive ints (C, H, W), got {input_shape!r}")
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        msg = f"metadata (extra, arch kwargs) must be JSON-serialisable: {exc}"
        raise InputError(msg) from None
    # clone: safetensors refuses tensors that share storage (tied weights)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    save_tensors(dir / WEIGHTS_FILE, state, metadata={"format": FORMAT})
    meta["sha256"] = _sha256(dir / WEIGHTS_FILE)
    write_json(dir / META_FILE, meta)
    return dir


def read_meta(dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``model.json`` of a saved model (no weights are read)."""
    dir = Path(dir)
    if dir.is_file():
        raise CheckpointError(
            f"{dir} is a file; pass the folder written by cnnlens.save "
            "(use load_state_dict_file for a bare weights file)"
        )
    path = dir / META_FILE
    if not path.is_file():
        raise CheckpointError(f"no {META_FILE} in {dir}; expected a folder written by cnnlens.save")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cnnlens model file (format != {FORMAT!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {version!r}; this cnnlens reads up to {FORMAT_VERSION}"
        )
    return meta


def rebuild(meta: dict[str, Any], path: Path) -> nn.Module:
    """The untrained :mod:`cnnlens.nets` model ``meta`` (from :func:`read_meta`) describes."""
    from . import nets

    arch = meta.get("arch")
    if not isinstance(arch, dict) or not isinstance(arch.get("kwargs", {}), dict):
        raise CheckpointError(
            f"{path} records no architecture; fill your own module with "
            "cnnlens.checkpoint.load(dir, model=...)"
        )
    name = arch.get("name")
    if name not in nets.names():
        raise CheckpointError(
            f"{path} names unknown architecture {name!r}; known: {', '.join(nets.names())}"
        )
    try:
        return nets.create(name, **arch.get("kwargs", {}))
    except (ConfigError, TypeError) as exc:
        msg = f"{path}: cannot build {name!r} from its saved arguments: {exc}"
        raise CheckpointError(msg) from None


def load(
    dir: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    model: nn.Module | None = None,
) -> nn.Module:
    """Rebuild a model saved by :func:`save`, load its weights strictly, set eval mode.

    ``model.meta`` gets ``classes``, ``mean``, ``std``, ``input_shape`` (None
    when not recorded) and ``extra``. Pass
    ``model`` to fill an existing module instead of rebuilding one from the
    JSON (needed for models that are not in :mod:`cnnlens.nets`).
    """
    dir = Path(dir)
    meta = read_meta(dir)
    weights = dir / str(meta.get("weights", WEIGHTS_FILE))
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing; the saved model in {dir} is incomplete")
    expected = meta.get("sha256")
    if expected is not None and _sha256(weights) != expected:
        raise CheckpointError(
            f"{weights} does not match the checksum in {dir / META_FILE} "
            "(an interrupted save or a modified file); save the model again"
        )
    shape = meta.get("input_shape")
    if shape is not None and _as_shape(shape) is None:
        raise CheckpointError(
            f"{dir / META_FILE}: input_shape must be [C, H, W] (positive ints), got {shape!r}"
        )
    if model is None:
        model = rebuild(meta, dir / META_FILE)
    load_state_dict_file(model, weights)
    if device is not None:
        model.to(device)
    model.eval()
    model.meta = {k: meta.get(k) for k in ("classes", "mean", "std", "input_shape", "extra")}
    return model


def _read_state(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
        lines = text.splitlines() or [type(exc).__name__]
        first = lines[0]
        if "weights only" in text.lower() or "weights_only" in text:
            why = next((ln.strip() for ln in lines if "WeightsUnpickler error" in ln), first)
            why = why.split(". Please")[0]
            raise CheckpointError(
                f"refused to load {path}: it holds pickled objects other than tensors and "
                f"plain containers, and cnnlens never unpickles code ({why}). Re-save it "
                "with torch.save(model.state_dict(), ...) or as .safetensors"
            ) from None
        raise CheckpointError(f"{path} is not a readable torch file: {first}") from None
    if isinstance(obj, Mapping):
        for key in NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def load_state_dict_file(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a ``.safetensors`` or ``.pt``/``.pth`` state dict into ``model`` strictly.

    A ``.pt`` may hold the state dict itself or a dict with it under one of
    :data:`NESTED_KEYS`; a ``"module."`` prefix (DataParallel) is stripped. Missing,
    unexpected or wrongly shaped keys raise a
    :class:`~cnnlens.errors.CheckpointError` that lists them; ``model`` is
    unchanged then. Returns ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    state = _read_state(path)
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: entries that are not tensors: {_keys(not_tensors)}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_keys(unexpected)}")
    if wrong:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(wrong)]
        more = f", ... ({len(wrong)} in all)" if len(wrong) > _SHOW else ""
        problems.append("shape mismatch (file vs model): " + "; ".join(shapes[:_SHOW]) + more)
    if problems:
        raise CheckpointError(
            f"{path} does not fit {type(model).__name__}: " + " | ".join(problems)
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit {type(model).__name__}: {exc}") from None
    return model

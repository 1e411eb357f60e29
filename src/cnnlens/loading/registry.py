"""Loaders of saved models, one per kind, registered by the package that saves that kind.

A loader declares which saved models it opens by what their ``model.json`` says
(:func:`cnnlens.checkpoint.read_meta`), e.g. DRIB's gated networks by an
``extra.drib`` entry. Each package registers its own in a module named
``loaders.py`` (``studies/drib/loaders.py``, ``studies/channel_roles/loaders.py``, ...). This module
sits in the base layer and never imports a package above it: the first lookup
finds every ``loaders.py`` under the cnnlens source folder and imports it by name
(:func:`importlib.import_module`), so a new package's loader needs no list
edited. A model no loader claims is a plain :mod:`cnnlens.nets` model, opened by
:func:`cnnlens.checkpoint.load`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint
from ..errors import CheckpointError, ConfigError, InputError, first_line

PROVIDER = "loaders.py"  # the module name a package registers its loaders in
CLASSIFIER = "classifier"  # the built-in loader of a plain cnnlens.nets model


@dataclass(frozen=True)
class Loader:
    """``opens(meta) -> bool`` says whether ``load(folder, device=...)`` opens a saved model."""

    name: str
    opens: Callable[[Mapping[str, Any]], bool]
    load: Callable[..., nn.Module]
    description: str


_LOADERS: dict[str, Loader] = {}
_discovered = False


def register(
    name: str,
    *,
    opens: Callable[[Mapping[str, Any]], bool],
    load: Callable[..., nn.Module],
    description: str,
) -> Loader:
    """Add a loader: ``opens`` reads the parsed ``model.json``; ``load(folder, device=)``
    returns the model in eval mode with ``model.meta`` set (as :func:`checkpoint.load` does)."""
    if name == CLASSIFIER or (name in _LOADERS and _LOADERS[name].load is not load):
        raise ConfigError(f"a loader named {name!r} is already registered")
    _LOADERS[name] = Loader(name, opens, load, description)
    return _LOADERS[name]


def extras(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """``meta["extra"]`` as a mapping (empty when absent or malformed)."""
    extra = meta.get("extra")
    return extra if isinstance(extra, Mapping) else {}


def arch_name(meta: Mapping[str, Any]) -> str | None:
    """The architecture name ``model.json`` records, if any."""
    arch = meta.get("arch")
    return arch.get("name") if isinstance(arch, Mapping) else None


def _discover() -> None:
    """Import every ``loaders.py`` of the cnnlens source tree (once)."""
    global _discovered
    if _discovered:
        return
    root = Path(__file__).resolve().parents[1]  # the cnnlens package folder
    for path in sorted(root.rglob(PROVIDER)):
        parts = path.relative_to(root).with_suffix("").parts
        if not all(p.isidentifier() for p in parts):
            continue
        importlib.import_module(".".join((root.name, *parts)))
    _discovered = True


def loaders() -> dict[str, str]:
    """Every loader's name and description, the built-in classifier loader last."""
    _discover()
    found = {name: loader.description for name, loader in sorted(_LOADERS.items())}
    return {**found, CLASSIFIER: "a cnnlens.nets model saved by cnnlens.save (the fallback)"}


def model_folder(path: str | Path) -> Path:
    """The folder holding ``model.json``: ``path`` itself or a run folder's ``model/``."""
    path = Path(path)
    if (path / checkpoint.META_FILE).is_file():
        return path
    if (path / "model" / checkpoint.META_FILE).is_file():
        return path / "model"
    raise CheckpointError(
        f"no saved model in {path}: expected {path / checkpoint.META_FILE} "
        f"or {path / 'model' / checkpoint.META_FILE}"
    )


def loader_for(meta: Mapping[str, Any], folder: Path) -> Loader:
    """The one registered loader whose ``opens`` claims ``meta``, else the classifier one."""
    _discover()
    claims = [loader for loader in _LOADERS.values() if loader.opens(meta)]
    if len(claims) > 1:
        names = ", ".join(sorted(loader.name for loader in claims))
        raise CheckpointError(
            f"{folder / checkpoint.META_FILE} is claimed by several loaders: {names}"
        )
    if claims:
        return claims[0]
    return Loader(CLASSIFIER, lambda _meta: True, checkpoint.load, "a cnnlens.nets model")


def open_saved(
    path: str | Path, *, device: str | torch.device | None = None
) -> tuple[nn.Module, str]:
    """A saved model (its folder or a run folder holding ``model/``) and its loader's name."""
    folder = model_folder(path)
    loader = loader_for(checkpoint.read_meta(folder), folder)
    return loader.load(folder, device=device), loader.name


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` this machine can use, else an InputError."""
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as exc:  # a CPU-only build asserts on "cuda"
        raise InputError(f"device {device!r} is not usable here: {first_line(exc)}") from None
    return dev

"""A resumable store of reference images (relevance and activation maximisation).

A standalone writer beside the job store, with its conventions (Zarr arrays,
an atomically replaced JSON manifest naming only complete data, refusal to mix
results of other settings): a folder holds ``references.json`` (the settings, the
identity of the model and data, the number of images seen and the name of the
current state) and ``state-<seen>.zarr`` groups, one per checkpoint, each with the
running top-k arrays of :class:`~cnnlens.analysis.concepts.relmax.ReferenceImages`
(``{activation,relevance}/{value,image,position}``, ``[C, top]``). A checkpoint is
written whole, then the manifest is replaced to name it, then the older one is
deleted: a pass killed anywhere resumes from the last named state, and its result
equals an uninterrupted pass's (the running top-k breaks ties by image index).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.concepts.relmax import ReferenceImages
from ..errors import ConfigError, InputError, StoreError
from ..io import write_json

MANIFEST = "references.json"
FORMAT = "cnnlens-references"


def _manifest(path: Path) -> dict | None:
    file = path / MANIFEST
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise StoreError(f"{file} is unreadable ({err}); remove the folder to start again") from err


def load_references(path: str | Path) -> ReferenceImages:
    """The reference images saved at ``path`` (finished or not: ``seen_`` says how far)."""
    import zarr

    path = Path(path)
    manifest = _manifest(path)
    if manifest is None:
        raise StoreError(f"{path} holds no reference images ({MANIFEST} missing)")
    group = zarr.open_group(path / manifest["state"], mode="r")
    arrays = {name: np.asarray(group[name][:]) for name in manifest["arrays"]}
    return ReferenceImages.from_state({"meta": manifest["meta"], "arrays": arrays})


def _write_state(path: Path, refs: ReferenceImages, identity: dict, total: int) -> None:
    import zarr

    state = refs.state()
    name = f"state-{refs.seen_:09d}.zarr"
    folder = path / name
    if folder.exists():
        shutil.rmtree(folder)
    group = zarr.open_group(folder, mode="w")
    for key, tensor in state["arrays"].items():
        values = tensor.numpy()
        group.create_array(key, shape=values.shape, dtype=values.dtype, fill_value=0)[:] = values
    previous = _manifest(path)
    write_json(path / MANIFEST, {
        "format": FORMAT, "identity": identity, "meta": state["meta"], "state": name,
        "arrays": sorted(state["arrays"]), "total": total, "finished": refs.seen_ >= total,
    })  # fmt: skip
    if previous is not None and previous["state"] != name:
        shutil.rmtree(path / previous["state"], ignore_errors=True)


def write_references(
    path: str | Path,
    model: Any,
    data: Any,
    refs: ReferenceImages,
    *,
    identity: dict,
    every: int = 1,
) -> ReferenceImages:
    """Run ``refs`` over ``data`` into the store at ``path``, checkpointing every
    ``every`` batches, or resume the pass saved there. ``identity`` names the model and
    the data (e.g. their specs): a store of another identity or other settings is
    refused. Returns the finished :class:`ReferenceImages` (reused when already done)."""
    from ..data import as_dataset

    path = Path(path)
    data = as_dataset(data)
    identity = json.loads(json.dumps({**identity, "images": len(data)}))
    manifest = _manifest(path)
    if manifest is None and path.exists() and any(path.iterdir()):
        raise InputError(f"{path} is a folder with other files in it, not a reference store")
    if manifest is not None:
        saved = load_references(path)
        if manifest["identity"] != identity or saved.settings() != refs.settings():
            raise ConfigError(
                f"{path} holds reference images of other settings or another model/data; "
                "use another folder or remove it"
            )
        saved.batch_size = refs.batch_size
        refs = saved
        if refs.seen_ >= len(data):
            return refs
    path.mkdir(parents=True, exist_ok=True)
    batches = [0]

    def checkpoint(r: ReferenceImages) -> None:
        batches[0] += 1
        if batches[0] % every == 0 or r.seen_ >= len(data):
            _write_state(path, r, identity, len(data))

    return refs.fit(model, data, on_batch=checkpoint)

"""Names of the files and folders of a store, and the atomic manifest."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import StoreError

FORMAT = "cnnlens-store"
FORMAT_VERSION = 1
JOB = "job.json"
MANIFEST = "manifest.json"
IMAGES = "images.zarr"
MAPS = "maps.zarr"
CURVES = "curves.zarr"
METRICS = "metrics"
PREDICTIONS = "predictions"
METRIC_COLUMNS = ["image", "method", "metric", "value", "target", "prediction", "shard"]
PREDICTION_COLUMNS = ["image", "target", "prediction", "probability", "label", "shard"]


def shard_file(folder: Path, shard: int) -> Path:
    return folder / f"shard-{shard:05d}.parquet"


def is_store(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a store's ``job.json``."""
    return (Path(path) / JOB).is_file()


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path} is not a readable {what}: {exc}") from None
    if not isinstance(data, dict):
        raise StoreError(f"{path} is not a readable {what}: not a JSON object")
    return data


def read_job(path: Path) -> dict:
    """A store's ``job.json``, its metric names under the registry's current ids (a
    store written before the ids were hyphenated keeps loading and resuming)."""
    from ..metrics.registry import canonical

    job = read_json(path, "store job.json")
    if isinstance(job.get("metrics"), list):
        job["metrics"] = [canonical(m, warn=False) for m in job["metrics"]]
    if isinstance(job.get("metric_params"), dict):
        job["metric_params"] = {
            canonical(m, warn=False): v for m, v in job["metric_params"].items()
        }
    return job


def read_manifest(root: Path, n_images: int | None = None) -> dict[int, dict]:
    """Finished shards ``{k: {"start": a, "stop": b, ...}}`` (empty when none).

    StoreError naming the file when it is not the manifest :func:`write_manifest` writes
    (``shards`` maps shard numbers to image ranges inside ``0 .. n_images``)."""
    path = root / MANIFEST
    if not path.is_file():
        return {}
    shards = read_json(path, "store manifest").get("shards", {})
    if not isinstance(shards, dict):
        raise StoreError(f"{path}: 'shards' must be an object, got {type(shards).__name__}")
    out = {}
    for k, entry in shards.items():
        start = entry.get("start") if isinstance(entry, dict) else None
        stop = entry.get("stop") if isinstance(entry, dict) else None
        ok = str(k).isdigit() and all(type(v) is int for v in (start, stop))
        if not ok or not 0 <= start < stop <= (stop if n_images is None else n_images):
            bound = "" if n_images is None else f" <= {n_images}"
            raise StoreError(
                f"{path}: shard {k!r} is not an image range {{'start': a, 'stop': b}} "
                f"with 0 <= a < b{bound}, got {repr(entry)[:100]}"
            )
        out[int(k)] = entry
    return out


def write_manifest(root: Path, shards: dict[int, dict]) -> None:
    """Replace the manifest atomically (temporary file, then rename)."""
    from ..io import write_json

    ordered = {str(k): shards[k] for k in sorted(shards)}
    write_json(root / MANIFEST, {"format": FORMAT, "version": FORMAT_VERSION, "shards": ordered})

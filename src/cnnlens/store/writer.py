"""Write a store: create it for a job (or resume it), then one shard at a time.

A shard's data goes in first (Zarr chunks, then the two Parquet files, each
replaced atomically), and only then is the shard added to ``manifest.json``
(atomic replace). A job killed anywhere leaves the manifest naming only shards
whose data is complete; a rerun writes every other shard again, whole, so the
result equals an uninterrupted run's. One process writes (the job's driver).

Opening an existing store for a job compares the saved ``job.json`` with the
new job: any difference that changes results (a method, a parameter, the
model's checksum, the data, the metrics, the shard size...) is refused with a
:class:`~cnnlens.errors.ConfigError`, unless ``new=True`` starts a new store.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from . import layout

# job.json keys that may change between runs without changing any result.
VOLATILE_KEYS = ("model", "format", "memory")  # memory: chunk sizes, not maps


@dataclass
class ShardData:
    """Everything one shard adds to the store (NumPy / pandas, on the CPU).

    ``images`` uint8 ``(n,H,W,C)``; ``maps`` ``{method: (n,H,W)}``; ``curves``
    ``{metric: {method: (n,S)}}`` with abscissae ``curve_x`` ``{metric: (S,)}``;
    ``metrics`` and ``predictions`` DataFrames with the columns of
    :data:`~cnnlens.store.layout.METRIC_COLUMNS` / ``PREDICTION_COLUMNS``;
    ``info`` extra facts kept in the manifest (e.g. seconds per method).
    """

    start: int
    stop: int
    images: np.ndarray
    maps: dict[str, np.ndarray]
    curves: dict[str, dict[str, np.ndarray]]
    curve_x: dict[str, np.ndarray]
    metrics: object
    predictions: object
    info: dict = field(default_factory=dict)


def _identity(job: dict) -> dict:
    return {k: v for k, v in json.loads(json.dumps(job)).items() if k not in VOLATILE_KEYS}


def _remove_store(path: Path) -> None:
    """Delete a store: renamed away first, so a kill leaves either it or nothing."""
    trash = path.with_name(f".{path.name}.removing-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash)


class StoreWriter:
    """Create or resume the store at ``path`` for ``job`` (see the module docstring).

    ``job`` must hold ``n_images``, ``methods`` ``{name: params}``, ``metrics``,
    ``dtype`` (``"float16"`` or ``"float32"``) and ``image_shape`` ``[C,H,W]``.
    """

    def __init__(self, path: str | Path, job: dict, *, new: bool = False) -> None:
        self.path = path = Path(path)
        self.job = job = json.loads(json.dumps(job))
        for key in ("n_images", "methods", "metrics", "dtype", "image_shape"):
            if key not in job:
                raise InputError(f"a store job needs {key!r}")
        if job["dtype"] not in ("float16", "float32"):
            raise InputError(f"store dtype must be float16 or float32, got {job['dtype']!r}")
        if path.exists() and not path.is_dir():
            raise InputError(f"store {path} is a file, not a folder")
        if layout.is_store(path):
            saved = layout.read_job(path / layout.JOB)
            if new:
                _remove_store(path)
            elif _identity(saved) != _identity(job):
                a, b = _identity(saved), _identity(job)
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                raise ConfigError(
                    f"store {path} holds results of another job ({', '.join(diff)} differ); "
                    "refusing to mix them: use another store or start a new one (--new-store)"
                )
            else:  # the same job: keep the saved one (its order of methods, say)
                saved.pop("format", None)
                self.job = {**saved, **{k: job[k] for k in VOLATILE_KEYS if k in job}}
        elif path.is_dir() and any(path.iterdir()):
            raise InputError(f"store {path} is a folder with other files in it, not a store")
        if not layout.is_store(path):
            self._create()
        self.finished: dict[int, dict] = layout.read_manifest(path)

    def _create(self) -> None:
        """Build the empty store in a sibling folder, then rename it into place."""
        import zarr

        from ..io import write_text

        job = self.job
        tmp = self.path.with_name(f".{self.path.name}.creating-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        n = int(job["n_images"])
        c, h, w = (int(v) for v in job["image_shape"])
        zarr.create_array(
            tmp / layout.IMAGES,
            shape=(n, h, w, c),
            chunks=(1, h, w, c),
            shards=self._shards((n, h, w, c)),
            dtype="uint8",
            fill_value=0,
        )
        maps = zarr.open_group(tmp / layout.MAPS, mode="w")
        for method in job["methods"]:
            maps.create_array(
                method,
                shape=(n, h, w),
                chunks=(1, h, w),
                shards=self._shards((n, h, w)),
                dtype=job["dtype"],
                fill_value=0,
            )
        zarr.open_group(tmp / layout.CURVES, mode="w")
        (tmp / layout.METRICS).mkdir()
        (tmp / layout.PREDICTIONS).mkdir()
        layout.write_manifest(tmp, {})
        # not key-sorted: the order of the methods is the order the user gave
        write_text(tmp / layout.JOB, json.dumps({"format": layout.FORMAT, **job}, indent=2) + "\n")
        if self.path.is_dir():
            self.path.rmdir()  # empty (checked above)
        os.replace(tmp, self.path)

    def _shards(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """Zarr shards = the job's shards: one file per job shard holding one chunk per
        image (small chunks as separate files would cost a disk block each), written
        whole by one :meth:`write_shard`."""
        size = self.job.get("shard_size")
        if not size:
            return None
        return (min(int(size), shape[0]), *shape[1:])

    def pending(self, shards: dict[int, tuple[int, int]]) -> list[int]:
        """The shards of ``shards`` ``{k: (start, stop)}`` not finished yet, in order."""
        for k, (a, b) in shards.items():
            done = self.finished.get(k)
            if done is not None and (done["start"], done["stop"]) != (a, b):
                raise ConfigError(
                    f"store {self.path}: shard {k} holds images {done['start']}:"
                    f"{done['stop']}, the job wants {a}:{b}"
                )
        return [k for k in sorted(shards) if k not in self.finished]

    def write_shard(self, k: int, data: ShardData) -> None:
        """Write shard ``k``'s data, then mark it finished in the manifest."""
        import zarr

        from ..io import atomic_path

        a, b = data.start, data.stop
        if not 0 <= a < b <= int(self.job["n_images"]):
            raise InputError(f"shard {k}: images {a}:{b} outside the job's {self.job['n_images']}")
        zarr.open_array(self.path / layout.IMAGES, mode="r+")[a:b] = data.images
        maps = zarr.open_group(self.path / layout.MAPS, mode="r+")
        for method, values in data.maps.items():
            maps[method][a:b] = values.astype(self.job["dtype"])
        curves = zarr.open_group(self.path / layout.CURVES, mode="r+")
        n = int(self.job["n_images"])
        for metric, per_method in data.curves.items():
            for method, y in per_method.items():
                name = f"{metric}/{method}"
                if name not in curves:
                    arr = curves.create_array(
                        name,
                        shape=(n, y.shape[1]),
                        chunks=(1, y.shape[1]),
                        shards=self._shards((n, y.shape[1])),
                        dtype="float32",
                        fill_value=float("nan"),
                    )
                    arr.attrs["x"] = [float(v) for v in data.curve_x[metric]]
                curves[name][a:b] = y.astype(np.float32)
        for folder, table in (
            (layout.METRICS, data.metrics),
            (layout.PREDICTIONS, data.predictions),
        ):
            with atomic_path(layout.shard_file(self.path / folder, k)) as tmp:
                table.to_parquet(tmp, index=False)
        self.finished[k] = {"start": a, "stop": b, **data.info}
        layout.write_manifest(self.path, self.finished)

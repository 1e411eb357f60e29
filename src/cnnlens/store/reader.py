"""Read a store back: display images, maps, curves and the two tables.

Only images of finished shards (those in ``manifest.json``) are readable, so a
reader never sees a half-written shard of a job that is still running or was
killed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import CnnlensError, InputError, StoreError, first_line
from . import layout


@contextlib.contextmanager
def _reading(path: Path, what: str, keep: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn a failure to read ``path`` (a truncated chunk, a table without its columns,
    an array of another shape) into a StoreError naming the file and what is wrong;
    ``keep`` are exceptions that mean something else (passed on)."""
    try:
        yield
    except (CnnlensError, *keep):
        raise
    except Exception as exc:
        problem = f"{type(exc).__name__}: {first_line(exc)}"[:300]
        raise StoreError(f"{path} is not a readable {what} ({problem})") from None


class Store:
    """A store opened for reading (see :mod:`cnnlens.store`)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not layout.is_store(path):
            raise InputError(f"{path} is not a cnnlens store (no {layout.JOB} in it)")
        self.path = path
        self.job: dict = layout.read_job(path / layout.JOB)
        for key in ("methods", "metrics", "n_images"):
            if key not in self.job:
                raise StoreError(f"{path / layout.JOB} lacks {key!r}: not a cnnlens store job")
        with _reading(path / layout.JOB, "store job.json"):
            self.methods: list[str] = [str(m) for m in self.job["methods"]]
            self.metrics: list[str] = [str(m) for m in self.job["metrics"]]
            self.classes: list[str] = [str(c) for c in self.job.get("classes") or []]
            self.n_images: int = int(self.job["n_images"])

    # --- progress -------------------------------------------------------
    @property
    def shards(self) -> dict[int, dict]:
        """Finished shards ``{k: {"start", "stop", ...}}``, read from the manifest now."""
        return layout.read_manifest(self.path, self.n_images)

    @property
    def finished(self) -> np.ndarray:
        """Sorted indices of the images whose shard is finished."""
        parts = [np.arange(s["start"], s["stop"]) for s in self.shards.values()]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def _check(self, indices: Sequence[int] | np.ndarray | int) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        if idx.ndim != 1:
            raise InputError(f"image indices must be a flat list, got shape {idx.shape}")
        bad = idx[(idx < 0) | (idx >= self.n_images)]
        if bad.size:
            raise InputError(f"image {int(bad[0])} is outside the store's {self.n_images} images")
        missing = idx[~np.isin(idx, self.finished)]
        if missing.size:
            raise InputError(f"image {int(missing[0])} is not finished yet in {self.path}")
        return idx

    # --- arrays ---------------------------------------------------------
    def _array(self, folder: str, name: str | None = None):
        import zarr

        root = self.path / folder
        with _reading(root if name is None else root / name, "Zarr array"):
            if name is None:
                return zarr.open_array(root, mode="r")
            group = zarr.open_group(root, mode="r")
            return group[name]

    def image(self, i: int) -> np.ndarray:
        """Display copy of image ``i``: uint8 ``(H, W, C)``."""
        (i,) = self._check(i)
        with _reading(self.path / layout.IMAGES, "Zarr array"):
            return np.asarray(self._array(layout.IMAGES)[int(i)])

    def maps(self, method: str, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Maps of ``method`` for ``indices``: float32 ``(n, H, W)``."""
        if method not in self.methods:
            raise InputError(f"unknown method {method!r}; this store has {', '.join(self.methods)}")
        idx = self._check(indices)
        arr = self._array(layout.MAPS, method)
        if idx.size == 0:
            return np.zeros((0, *arr.shape[1:]), dtype=np.float32)
        with _reading(self.path / layout.MAPS / method, "Zarr array"):
            return np.asarray(arr.get_orthogonal_selection((idx,)), dtype=np.float32)

    def curve(self, metric: str, method: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of one image's curve; KeyError if the store has none for it."""
        import zarr

        from ..metrics.registry import canonical

        root = self.path / layout.CURVES
        metric = canonical(metric)
        with _reading(root / metric / method, "Zarr array", keep=(KeyError,)):
            try:
                group = zarr.open_group(root, mode="r")
                old = metric.replace("-", "_")  # a store written before the ids were hyphenated
                arr = group[f"{metric}/{method}" if metric in group else f"{old}/{method}"]
            except (KeyError, FileNotFoundError):
                raise KeyError(f"no {metric} curve of {method} in {self.path}") from None
        i = int(i)
        if not 0 <= i < self.n_images or i not in set(self.finished.tolist()):
            raise KeyError(f"no {metric} curve of {method} for image {i}: not finished")
        with _reading(root / metric / method, "Zarr array"):
            y = np.asarray(arr[i], dtype=np.float32)
            x = np.asarray(arr.attrs["x"], dtype=np.float32)
        return x, y

    def curve_names(self) -> dict[str, list[str]]:
        """``{curve name: [methods with that curve]}`` of the curves the store holds."""
        import zarr

        root = self.path / layout.CURVES
        with _reading(root, "Zarr group"):
            group = zarr.open_group(root, mode="r")
            return {name: sorted(group[name].array_keys()) for name in sorted(group.group_keys())}

    def curves(self, name: str, method: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of a curve for every finished image, in image order: ``y`` float32
        ``(n_finished, steps)``."""
        arr = self._array(layout.CURVES, f"{name}/{method}")
        with _reading(self.path / layout.CURVES / name / method, "Zarr array"):
            y = np.asarray(arr.get_orthogonal_selection((self.finished,)), dtype=np.float32)
            x = np.asarray(arr.attrs["x"], dtype=np.float32)
        return x, y

    # --- tables ---------------------------------------------------------
    def _table(self, folder: str, columns: list[str]):
        import pandas as pd

        frames = []
        for k in sorted(self.shards):
            file = layout.shard_file(self.path / folder, k)
            with _reading(file, "Parquet table of a finished shard"):
                frames.append(pd.read_parquet(file)[columns])
        if not frames:
            return pd.DataFrame({c: [] for c in columns})
        return pd.concat(frames, ignore_index=True)

    def predictions(self):
        """One row per finished image: ``image, target, prediction, probability, label, shard``."""
        return self._table(layout.PREDICTIONS, layout.PREDICTION_COLUMNS)

    def metrics_table(self):
        """One row per finished image x method x metric:
        ``image, method, metric, value, target, prediction, shard``."""
        from ..metrics.registry import canonical_key

        table = self._table(layout.METRICS, layout.METRIC_COLUMNS)
        names = {m: canonical_key(m) for m in table["metric"].unique()}  # old ids mapped
        table["metric"] = table["metric"].map(names)
        return table

    def __repr__(self) -> str:
        done = len(self.finished)
        return f"Store({str(self.path)!r}, {done}/{self.n_images} images, methods={self.methods})"


def open(path: str | Path) -> Store:  # noqa: A001  (the contract's name: cnnlens.store.open)
    """Open the store at ``path``; InputError naming ``path`` if it is not one."""
    return Store(path)

"""What the explorer shows: a run folder or a store, behind one small interface.

- :class:`RunSource` — a folder written by ``cnnlens train`` / ``cnnlens demo``: its model,
  its ``report.html``, and the first test images of the data set it was trained on, whose
  maps are computed when first asked for (target: the predicted class).
- :class:`StoreSource` — a store written by ``cnnlens run`` (:mod:`cnnlens.store`): images,
  predictions, maps, curves and metrics of its finished shards, read as saved; the job's
  model (found by its path, checked against the job's checksum of its weights) explains
  uploads.

Models open through :func:`cnnlens.load` (:meth:`cnnlens.loading.spec.ModelSpec.open`):
a run folder's when first needed, a store's at start (to check its checksum), and a model
spec given as ``cnnlens serve --model SPEC [--weights ... --data DATA]`` (a user's module,
a ``model.yaml``, ...: :class:`RunSource` over it) at start, checked with its data.
Data are read as the model's card says (:func:`cnnlens.loading.spec.card_data`).
"""

from __future__ import annotations

import re
import threading
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, CnnlensError, InputError, first_line

RUN_IMAGES = 64
METRIC_COLUMNS = ["image", "method", "metric", "value"]


def needs_setup() -> dict[str, str]:
    """``{method: what it needs}`` of the methods that need a part prepared first
    (their ``needs``): the explorer does not run them on the fly."""
    from .. import attribution

    return {name: attribution.get(name).needs for name in attribution.methods()
            if attribution.get(name).needs}  # fmt: skip


def on_the_fly_methods() -> list[str]:
    """Every registered method that runs on the model alone."""
    from .. import attribution

    return [name for name in attribution.methods() if not attribution.get(name).needs]


def report_sections(report: Path | None) -> list[dict]:
    """``[{"key", "title"}]`` of the sections of a cnnlens ``report.html``."""
    if report is None:
        return []
    text = report.read_text(encoding="utf-8", errors="replace")
    found = re.findall(r'<section id="([\w.-]+)"><h2>(.*?)</h2>', text)
    return [{"key": key, "title": re.sub(r"<[^>]+>", "", title)} for key, title in found]


class ModelHolder:
    """A model opened once, with its normalisation, and a lock for one user at a time:
    a saved model's ``folder``, or a model ``spec`` (a :class:`ModelSpec`) opened at once."""

    def __init__(self, folder: Path | None, problem: str | None = None, *, spec=None) -> None:
        from ..loading.spec import ModelSpec

        self.folder = folder
        found = folder is not None or spec is not None
        self.problem = problem if found or problem else "no saved model found"
        self.spec = spec if spec is not None or folder is None else ModelSpec(str(folder))
        self.lock = threading.Lock()
        if spec is not None:
            self.model  # noqa: B018 (a given spec is opened and checked before any work)

    @cached_property
    def meta(self) -> dict:
        from ..checkpoint import read_meta

        if self.folder is None:
            return dict(self.model.meta)
        return read_meta(self.folder)

    @cached_property
    def model(self) -> torch.nn.Module:
        return self.spec.open().eval()

    @property
    def available(self) -> bool:
        return self.spec is not None and self.problem is None

    def input_shape(self) -> tuple[int, int, int]:
        shape = self.meta.get("input_shape")
        if not shape:
            where = f"{self.folder}/model.json" if self.folder is not None else "the model card"
            raise CheckpointError(f"{where} has no input_shape to resize to (give --input)")
        return tuple(int(s) for s in shape)

    def explain(self, x: torch.Tensor, method: str, target: int) -> np.ndarray:
        """The map ``[H, W]`` of ``method`` for ``x`` ``[1, C, H, W]`` and class ``target``."""
        from .. import attribution

        with self.lock:
            e = attribution.explain(self.model, x, method, target=target)
        return e.maps[0, 0].detach().cpu().float().numpy()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock, torch.no_grad():
            return self.model(x).softmax(1)


def _model_folder(path: Path) -> Path | None:
    for folder in (path, path / "model"):
        if (folder / "model.json").is_file():
            return folder
    return None


class RunSource:
    """A run folder: its model, its report and the first test images of its data."""

    kind = "run"

    def __init__(
        self,
        root: Path,
        *,
        images: int = RUN_IMAGES,
        holder: ModelHolder | None = None,
        data: str | None = None,
    ) -> None:
        self.root = root
        self.holder = holder if holder is not None else ModelHolder(_model_folder(root))
        self.data_spec = data
        report = root / "report.html"
        self.report = report if report.is_file() else None
        self.count = images
        self.metrics: list[str] = []
        self._maps: dict[tuple[str, int], np.ndarray] = {}
        self._cache_lock = threading.Lock()

    @property
    def title(self) -> str:
        return f"run {self.root.name}"

    @cached_property
    def data(self):
        """The test split (first ``images``) of the data given, else of the data the run
        names, read as the model's card says; None when the run names no loadable data
        (data given but not loadable or not fitting the model: the error)."""
        if not self.holder.available:
            return None
        if self.data_spec is not None:
            return self._open_data(self.data_spec)
        name = (self.holder.meta.get("extra") or {}).get("data")
        if not isinstance(name, str):
            return None
        try:
            return self._open_data(name)
        except CnnlensError:
            return None

    def _open_data(self, name: str):
        from ..loading.spec import model_data

        model = self.holder.model
        test = model_data(model, name, "test")
        return test.subset(range(min(self.count, len(test))))

    @property
    def classes(self) -> list[str]:
        if self.holder.available:
            return list(self.holder.meta.get("classes") or [])
        return []

    @property
    def methods(self) -> list[str]:
        return on_the_fly_methods() if self.data is not None else []

    @property
    def indices(self) -> list[int]:
        return list(range(len(self.data))) if self.data is not None else []

    @cached_property
    def _probabilities(self) -> torch.Tensor:
        x, _ = self.data.tensors()
        return self.holder.predict(x)

    def predictions(self) -> list[dict]:
        if self.data is None:
            return []
        probs = self._probabilities
        best = probs.argmax(1)
        classes = self.classes or [str(k) for k in range(probs.shape[1])]
        out = []
        for i in range(len(self.data)):
            target, pred = int(self.data.labels[i]), int(best[i])
            out.append(
                {
                    "image": i,
                    "target": target,
                    "prediction": pred,
                    "probability": float(probs[i, pred]),
                    "label": classes[target],
                    "predicted_label": classes[pred],
                }
            )
        return out

    def _check(self, i: int) -> None:
        if i not in range(len(self.indices)):
            raise KeyError(f"no image {i}")

    def image(self, i: int) -> np.ndarray:
        self._check(i)
        raw = self.data.raw_batch([i])[0]
        return (raw.permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()

    def map(self, method: str, i: int) -> np.ndarray:
        self._check(i)
        if method not in self.methods:
            raise KeyError(f"no method {method!r}")
        key = (method, i)
        with self._cache_lock:
            if key in self._maps:
                return self._maps[key]
        x, _ = self.data.tensors([i])
        target = int(self._probabilities[i].argmax())
        values = self.holder.explain(x, method, target)
        with self._cache_lock:
            self._maps[key] = values
        return values

    def inputs(self, indices: list[int]) -> torch.Tensor:
        """The model's inputs of browsable images ``indices``."""
        for i in indices:
            self._check(i)
        return self.data.tensors(list(indices))[0]

    @cached_property
    def concepts(self):
        """The concept view of these images (:class:`.concepts.ConceptView`)."""
        from .concepts import ConceptView

        return ConceptView(self.holder, self.inputs, self.image, lambda: self.indices)

    def curves(self, i: int) -> dict:
        self._check(i)
        return {}

    def metric_table(self):
        import pandas as pd

        return pd.DataFrame({c: [] for c in METRIC_COLUMNS})


class StoreSource:
    """A store written by ``cnnlens run``: read, never recomputed; only finished shards."""

    kind = "store"

    def __init__(self, root: Path) -> None:
        from .. import store as store_module

        self.root = root
        self.store = store_module.open(root)
        self.metrics = list(self.store.metrics)
        self.methods = list(self.store.methods)
        self._cache: dict[str, tuple[int, object]] = {}
        self.holder = self._find_model()
        report = None
        if self.holder.folder is not None:
            run = self.holder.folder.parent
            for candidate in (root / "report.html", run / "report.html"):
                if candidate.is_file():
                    report = candidate
                    break
        elif (root / "report.html").is_file():
            report = root / "report.html"
        self.report = report

    @property
    def title(self) -> str:
        return f"store {self.root.name}"

    def _find_model(self) -> ModelHolder:
        job = self.store.job
        spec = job.get("model")
        if isinstance(spec, dict):
            spec = spec.get("path")
        if not isinstance(spec, str):
            return ModelHolder(None, "the job names no model path")
        candidates = [Path(spec)] if Path(spec).is_absolute() else [Path(spec), self.root / spec]
        folder = next((f for c in candidates if (f := _model_folder(c)) is not None), None)
        card = {k: v for k, v in (job.get("model_card") or {}).items() if v is not None}
        if folder is None and not card:
            return ModelHolder(None, f"the job's model {spec!r} is not found from here")
        expected = job.get("model_sha256")
        try:
            if folder is None:  # a module spec with its card, as the job opened it
                from ..loading.spec import ModelSpec

                holder = ModelHolder(None, spec=ModelSpec.from_fields(spec, card))
            else:
                holder = ModelHolder(folder)
            model = holder.model
        except Exception as exc:  # the store stays browsable without its model
            return ModelHolder(
                None, f"the job's model {spec!r} cannot be opened: {first_line(exc)}"
            )
        if expected:
            from ..jobs.spec import model_checksum  # the checksum the job saved

            if model_checksum(model) != expected:
                return ModelHolder(None, f"the model {spec!r} is not the one the job used")
        return holder

    @property
    def classes(self) -> list[str]:
        return list(self.store.classes)

    @property
    def indices(self) -> list[int]:
        return [int(i) for i in self.store.finished]

    def _check(self, i: int) -> None:
        finished = self.store.finished  # sorted
        k = int(np.searchsorted(finished, i))
        if k >= len(finished) or int(finished[k]) != i:
            raise KeyError(f"image {i} is not in a finished shard")

    def _cached(self, name: str, read):
        """``read()``, again only when more shards have finished since the last call."""
        count = len(self.store.shards)
        hit = self._cache.get(name)
        if hit is None or hit[0] != count:
            hit = self._cache[name] = (count, read())
        return hit[1]

    def predictions(self) -> list[dict]:
        return self._cached("predictions", self._read_predictions)

    def _read_predictions(self) -> list[dict]:
        table = self.store.predictions().sort_values("image")
        classes = self.classes
        rows = []
        for row in table.itertuples(index=False):
            pred = int(row.prediction)
            rows.append(
                {
                    "image": int(row.image),
                    "target": int(row.target),
                    "prediction": pred,
                    "probability": float(row.probability),
                    "label": str(row.label),
                    "predicted_label": classes[pred] if 0 <= pred < len(classes) else str(pred),
                }
            )
        return rows

    def image(self, i: int) -> np.ndarray:
        self._check(i)
        return np.asarray(self.store.image(i), dtype=np.uint8)

    def map(self, method: str, i: int) -> np.ndarray:
        self._check(i)
        if method not in self.methods:
            raise KeyError(f"no method {method!r}")
        return np.asarray(self.store.maps(method, [i])[0], dtype=np.float32)

    def inputs(self, indices: list[int]) -> torch.Tensor:
        """The model's inputs of finished images ``indices``: the stored pixels normalised
        as the model's card says."""
        from .upload import to_input

        mean, std = self.holder.meta.get("mean"), self.holder.meta.get("std")
        return torch.cat([to_input(self.image(i), mean, std) for i in indices])

    @cached_property
    def concepts(self):
        """The concept view of the finished images (:class:`.concepts.ConceptView`)."""
        from .concepts import ConceptView

        return ConceptView(self.holder, self.inputs, self.image, lambda: self.indices)

    def curves(self, i: int) -> dict:
        self._check(i)
        out: dict[str, dict] = {}
        for metric in self.metrics:
            for method in self.methods:
                try:
                    x, y = self.store.curve(metric, method, i)
                except KeyError:
                    continue
                out.setdefault(metric, {})[method] = {
                    "x": np.asarray(x, dtype=float).tolist(),
                    "y": np.asarray(y, dtype=float).tolist(),
                }
        return out

    def metric_table(self):
        """``image, method, metric, value`` of the finished shards (a pandas DataFrame)."""
        return self._cached("metrics", lambda: self.store.metrics_table()[METRIC_COLUMNS])


def open_source(
    path: str | Path | None,
    *,
    images: int = RUN_IMAGES,
    model=None,
    data: str | None = None,
):
    """A :class:`StoreSource` or :class:`RunSource` for ``path``; with ``model`` (a
    :class:`~cnnlens.loading.spec.ModelSpec`, as ``--model`` and its card options give it) a
    :class:`RunSource` over that model and ``data`` (its test split; default: the data a run
    folder's model names), both opened and checked here; InputError if it is neither."""
    from ..store import is_store

    if model is not None:
        if path is not None:
            raise InputError("give a run folder or store, or --model, not both")
        holder = ModelHolder(None, spec=model)
        root = model.folder.resolve() if model.folder is not None else Path.cwd()
        source = RunSource(root, images=images, holder=holder, data=data)
        if data is not None:
            source.data  # noqa: B018 (read and checked against the model before any work)
        return source
    if data is not None:
        raise InputError("--data is for --model: a run folder's data are those it names")
    if path is None:
        raise InputError("give a run folder or store to explore, or --model")
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path} is not a folder: pass a run folder or a store")
    if is_store(path):
        return StoreSource(path.resolve())
    if _model_folder(path) is not None or (path / "report.html").is_file():
        return RunSource(path.resolve(), images=images)
    raise InputError(
        f"{path} is neither a run folder (model/model.json or report.html) nor a store (job.json)"
    )

"""A job: what to explain and score, over which data, into which store (issue 18).

:class:`JobSpec` holds the fields of ``job.yaml`` (or the flags of ``cnnlens run``,
or keyword arguments in Python). :func:`prepare` checks all of it before any work
(unknown method, parameter or metric, unreadable data, a model that does not
load or fit, an unwritable store: one :class:`~cnnlens.errors.CnnlensError`)
and returns the loaded model and data with the job as the store saves it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, InputError

ENGINES = ("local", "ray")
COMPILE = ("auto", "on", "off")
DTYPES = ("float16", "float32")
BASELINES = ("random", "sobel")


@dataclass
class JobSpec:
    """The fields of a job. ``model`` is a model spec as ``--model`` takes it (a saved-model
    or run folder, ``package.module:callable``, a ``model.yaml``, ...), with the card fields
    ``weights``, ``classes`` (a file or a list), ``input`` (``C,H,W``), ``mean``, ``std``
    beside it as the command line's ``--weights ...`` (:class:`cnnlens.loading.spec.ModelSpec`;
    paths from the current folder, as ``model``'s), or an ``nn.Module`` in Python; ``data``
    a data set name as :func:`cnnlens.data.load` reads (``split`` of it), or any data
    :func:`cnnlens.data.as_dataset` takes, in Python. ``images``: the first n
    images (None: all). ``methods``: ``{name: {parameter: value}}`` (a list of
    names means default parameters). ``metrics``: names or ``"all"``."""

    model: Any
    store: Path
    weights: str | Path | None = None
    classes: Any = None
    input: Any = None
    mean: Any = None
    std: Any = None
    data: Any = "shapes"
    split: str = "test"
    images: int | None = None
    methods: dict[str, dict] = field(default_factory=lambda: {"saliency": {}})
    metrics: list[str] | str = "all"
    metric_params: dict[str, dict] = field(default_factory=dict)
    shard_size: int = 32
    dtype: str = "float32"
    seed: int = 0
    sanity_images: int = 32
    batch_size: int | None = None
    memory: int | float | str | None = None  # bytes or '2GiB'; none: a share of free
    engine: str = "local"
    workers: int = 1
    threads: int | None = None
    address: str | None = None
    compile: str = "auto"
    new_store: bool = False
    progress: bool = True

    @classmethod
    def from_dict(cls, fields: dict, *, where: str = "job") -> JobSpec:
        """A spec from a mapping (a parsed ``job.yaml``); unknown keys are refused."""
        if not isinstance(fields, dict):
            raise ConfigError(
                f"{where} must be a mapping of job fields, got {type(fields).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        for key in ("model", "store"):
            if fields.get(key) in (None, ""):
                raise ConfigError(f"{where}: {key!r} is required")
        values = dict(fields)
        values["store"] = Path(values["store"])
        if isinstance(values.get("model"), Path):
            values["model"] = str(values["model"])
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> JobSpec:
        """Read ``job.yaml``; ``overrides`` (flags given next to it) win over its fields."""
        import yaml

        path = Path(path)
        try:
            fields = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise InputError(f"cannot read job file {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(fields, dict):
            raise ConfigError(f"{path} must be a mapping of job fields")
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(fields, where=str(path))


@dataclass
class PreparedJob:
    """A validated job: the loaded model and data, and ``job`` as ``job.json`` saves it."""

    spec: JobSpec
    model: nn.Module
    dataset: Any
    job: dict
    shards: dict[int, tuple[int, int]]


def model_checksum(model: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_spec(spec: JobSpec):
    """The job's model spec and card fields, each checked (an error names the field), or
    None for an ``nn.Module`` given in Python (which carries no card fields)."""
    from ..loading.spec import CARD_OPTIONS, ModelSpec

    card = {k: getattr(spec, k) for k in CARD_OPTIONS if getattr(spec, k) is not None}
    if isinstance(spec.model, nn.Module):
        if card:
            raise ConfigError(
                f"{', '.join(card)}: card fields describe a model spec, not an nn.Module"
            )
        return None
    if not isinstance(spec.model, str | Path) or not str(spec.model):
        raise ConfigError(f"model must be a model spec (text), got {spec.model!r}")
    text = str(spec.model)
    text = str(Path(text)) if Path(text).exists() else text  # a folder as before: no slash
    return ModelSpec.from_fields(text, card, name=lambda field: f"job field {field}")


def _methods(spec: JobSpec) -> dict[str, dict]:
    """``{name: params}`` of the job's methods, names and parameters checked by each
    method's declaration (the layer names again once the model is loaded)."""
    from ..metrics.evaluate import check_method_params, resolve_methods

    methods = spec.methods
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if isinstance(methods, list | tuple):
        methods = {str(m): {} for m in methods}
    if not isinstance(methods, dict) or not methods:
        raise ConfigError(f"methods must name at least one method, got {spec.methods!r}")
    for name, params in methods.items():
        if params is not None and not isinstance(params, dict):
            raise ConfigError(
                f"methods: {name}'s parameters must be a mapping of name: value, got {params!r}"
            )
    methods = {str(name): dict(params or {}) for name, params in methods.items()}
    return check_method_params(methods, resolve_methods(list(methods)))


def prepared_folder(store: Path) -> Path:
    """Where a job's methods save what they prepare (IBA's statistics): beside the
    store, since the store folder itself holds only the store."""
    return store.with_name(f"{store.name}.prepared")


def _prepare_methods(
    methods: dict[str, dict], model: nn.Module, spec: JobSpec, model_path: Path | None
) -> None:
    """Each method's ``prepare`` (what its ``needs`` say) into its parameters, which
    must stay JSON (the job saves them): prepared parts are saved as files."""
    from ..attribution import Setup, get
    from ..compatibility import check_fits
    from ..loading.spec import card_data

    train = None
    if isinstance(spec.data, str) and ":" not in spec.data:

        def train():
            data = card_data(spec.data, "train", model)
            return check_fits(model, data, data=spec.data, by_name=True)

    setup = Setup(
        model,
        train=train,
        data=spec.data if isinstance(spec.data, str) else None,
        model_path=model_path,
        folder=prepared_folder(Path(spec.store)),
    )
    for name, params in methods.items():
        if name not in BASELINES:
            params.update(get(name).prepare(setup, params))


def _open_data(spec: JobSpec, model: nn.Module):
    """The job's data, read as ``model``'s card says (:func:`cnnlens.loading.spec.card_data`)."""
    from ..data import as_dataset
    from ..errors import CnnlensError, DataError
    from ..loading.spec import card_data

    if isinstance(spec.data, str):
        try:
            data = card_data(spec.data, spec.split, model)
        except CnnlensError:
            raise
        except Exception as exc:  # a reader failing on a bad file
            raise DataError(f"cannot read data {spec.data!r}: {exc}") from None
        described = f"{spec.data}:{spec.split}" if ":" not in spec.data else spec.data
        return data, {"name": spec.data, "split": spec.split, "spec": described}
    data = as_dataset(spec.data)
    return data, {"name": getattr(data, "name", "dataset"), "split": None, "spec": None}


# "auto" compiles where the job is long enough to repay the one-time compile (20-40 s
# on a 2-core CPU): inductor fuses each convolution with the ReLU / residual addition
# after it, which the uncompiled fast copy does not (benchmarks/compile.py).
AUTO_COMPILE_IMAGES = 1000


def resolve_compile(mode: str, n_images: int, model: nn.Module) -> bool:
    """Whether a job's forward-only chunks run ``torch.compile``d (``--compile``)."""
    if mode != "auto":
        return mode == "on"
    return n_images >= AUTO_COMPILE_IMAGES


def prepare(spec: JobSpec) -> PreparedJob:
    """Validate every field of ``spec`` before any work; the model and data loaded."""
    from ..compatibility import check_fits
    from ..io import check_writable_folder
    from ..metrics.evaluate import (
        RUN_SETTINGS,
        check_method_params,
        check_metric_params,
        resolve_metrics,
    )
    from ..params import check_params

    if spec.engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {spec.engine!r}")
    if spec.compile not in COMPILE:
        raise ConfigError(f"compile must be one of {', '.join(COMPILE)}, got {spec.compile!r}")
    if spec.dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {spec.dtype!r}")
    for name in ("shard_size", "workers"):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if spec.images is not None and (
        isinstance(spec.images, bool) or not isinstance(spec.images, int) or spec.images < 1
    ):
        raise ConfigError(
            f"images must be a positive integer (or absent: all), got {spec.images!r}"
        )
    if spec.address is not None and spec.engine != "ray":
        raise ConfigError("address is for engine: ray only")
    if spec.engine == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError('engine ray needs Ray: pip install "cnnlens[ray]"')
    check_params("job", {"seed": spec.seed}, {"seed": RUN_SETTINGS["seed"]})
    check_params(
        "job",
        {
            "sanity_images": spec.sanity_images,
            "batch_size": spec.batch_size,
            "memory": spec.memory,
        },
        RUN_SETTINGS,
    )
    if spec.threads is not None and (
        isinstance(spec.threads, bool) or not isinstance(spec.threads, int) or spec.threads < 1
    ):
        raise ConfigError(f"threads must be a positive integer, got {spec.threads!r}")
    opener = model_spec(spec)
    methods = _methods(spec)
    metrics = resolve_metrics(spec.metrics)
    metric_params = check_metric_params(spec.metric_params, metrics)
    store = Path(spec.store)
    check_writable_folder(store, option="store")
    if opener is None:
        model, model_path = spec.model.eval(), None
    else:
        model, model_path = opener.open(), opener.folder
    checksum = model_checksum(model)
    data, data_spec = _open_data(spec, model)
    n = len(data) if spec.images is None else spec.images
    if n > len(data) or n < 1:
        raise InputError(f"images: {spec.images} is more than the {len(data)} images of the data")
    data = check_fits(model, data, data=str(data_spec["spec"] or data_spec["name"]), by_name=True)
    check_method_params(methods, list(methods), model)  # layer names, now the model is here
    _prepare_methods(methods, model, spec, model_path)  # last: it may write (beside the store)
    c, h, w = (int(v) for v in data.image_shape)
    job = {
        "model": None if opener is None else opener.spec,
        **({"model_card": opener.card()} if opener is not None and opener.card_given else {}),
        "model_sha256": checksum,
        "data": data_spec,
        "n_images": n,
        "methods": methods,
        "metrics": metrics,
        "metric_params": metric_params,
        "shard_size": spec.shard_size,
        "dtype": spec.dtype,
        "compile": resolve_compile(spec.compile, n, model),
        "seed": spec.seed,
        "sanity_images": spec.sanity_images,
        "batch_size": spec.batch_size,
        "memory": spec.memory,
        "classes": [str(c) for c in data.classes],
        "image_shape": [c, h, w],
        "mean": [float(v) for v in data.mean],
        "std": [float(v) for v in data.std],
    }
    shards = {
        k: (a, min(a + spec.shard_size, n)) for k, a in enumerate(range(0, n, spec.shard_size))
    }
    return PreparedJob(spec=spec, model=model, dataset=data, job=job, shards=shards)

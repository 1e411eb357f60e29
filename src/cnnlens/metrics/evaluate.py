"""``cnnlens.evaluate``: explain a batch with several methods and score every map with
every metric, in one pass; the method x metric table of the issue.

Work is cut into (image chunk, method) units. The random-map and Sobel-edge baselines
are always evaluated next to the methods. Saving and resuming is the job engine's
(:mod:`cnnlens.jobs` into a :mod:`cnnlens.store`): ``cnnlens evaluate --out`` runs
this work as a job, shard by shard, and reads its tables back from the store.

``metrics="all"`` is every registered metric of the table (``cnnlens.metrics.names(
optional=False)``); the optional ones (``max-sensitivity``, ``infidelity``, ``road``:
registered with ``default=False``) run only when named, e.g. ``metrics=["deletion",
"road"]``: max-sensitivity re-explains every image ``samples`` times and ROAD solves
one sparse system per image and fraction, too slow for the default table. What each
metric is, needs and takes is its registry entry (:mod:`.registry`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..chunking import MEMORY
from ..data.adapt import as_dataset
from ..errors import ConfigError, InputError
from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import Param, check_params
from ..progress import Progress
from . import registry
from .baselines import random_map, sobel_map
from .result import ci95

BASELINE_METHODS = ("random", "sobel")


@dataclass
class Evaluation:
    """Per-image scores: ``values[method][metric]`` ``[N]``, ``curves[method][name]`` ``[N,S]``."""

    images: list[int]
    values: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    curves: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    sanity_fails: dict[str, bool] = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """One row per image x method x metric (NaN rows are kept: the metric did not apply)."""
        out = []
        for method, per_metric in self.values.items():
            for metric, vals in per_metric.items():
                for img, v in zip(self.images, vals.tolist(), strict=False):
                    out.append({"image": img, "method": method, "metric": metric, "value": v})
        return out

    def summary(self) -> list[dict]:
        """Per (method, metric): mean, 95 % CI half width and number of images with a value."""
        out = []
        for method, per_metric in self.values.items():
            for metric, vals in per_metric.items():
                ok = vals[~torch.isnan(vals)]
                out.append(
                    {
                        "method": method,
                        "metric": metric,
                        "mean": float(ok.double().mean()) if ok.numel() else math.nan,
                        "ci95": ci95(vals),
                        "n": int(ok.numel()),
                    }
                )
        return out

    def table(self) -> tuple[list[str], list[str], dict[tuple[str, str], tuple[float, float]]]:
        """Methods, metrics and ``{(method, metric): (mean, ci95)}`` for a method x metric table."""
        cells = {(r["method"], r["metric"]): (r["mean"], r["ci95"]) for r in self.summary()}
        methods = list(self.values)
        metrics = []
        for per_metric in self.values.values():
            metrics += [m for m in per_metric if m not in metrics]
        return methods, metrics, cells

    def markdown(self) -> str:
        """The method x metric table as Markdown, ``mean ± 95 % CI``."""
        methods, metrics, cells = self.table()
        arrow = {m: " ↓" if registry.lower_is_better(m) else " ↑" for m in metrics}
        head = "| method | " + " | ".join(m + arrow[m] for m in metrics) + " | sanity |"
        sep = "|---" * (len(metrics) + 2) + "|"
        lines = [head, sep]
        for method in methods:
            row = []
            for metric in metrics:
                mean, half = cells.get((method, metric), (math.nan, math.nan))
                row.append("–" if math.isnan(mean) else f"{mean:.3f} ± {half:.3f}")
            fails = self.sanity_fails.get(method)
            verdict = "–" if fails is None else ("FAILS" if fails else "passes")
            lines.append(f"| {method} | " + " | ".join(row) + f" | {verdict} |")
        return "\n".join(lines) + "\n"


def _method_fn(name: str, params: dict, seed: int) -> Callable:
    """``f(model, x, target) -> maps`` for a registered method or a baseline."""
    if name == "random":
        return lambda _m, x, _t: random_map(x, seed=seed)
    if name == "sobel":
        return lambda _m, x, _t: sobel_map(x)
    from ..attribution import explain

    def run(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        e = explain(model, x, method=name, target=target, **params)
        return e

    return run


def resolve_methods(methods: str | Sequence[str]) -> list[str]:
    """``"all"`` means every registered method; the baselines are always added."""
    from ..attribution import methods as registered

    known = list(registered())
    if isinstance(methods, str):
        methods = known if methods == "all" else [m.strip() for m in methods.split(",") if m]
    names = []
    for m in methods:
        if m not in known and m not in BASELINE_METHODS:
            from ..attribution import get

            get(m)  # raises InputError with close matches
        if m not in names:
            names.append(m)
    return names + [b for b in BASELINE_METHODS if b not in names]


def resolve_metrics(metrics: str | Sequence[str]) -> list[str]:
    """``"all"`` means the table (registered metrics but the optional ones, which run only
    when named); names are the registry's ids (old underscored spellings mapped)."""
    if isinstance(metrics, str):
        if metrics == "all":
            return registry.names(optional=False)
        metrics = [m.strip() for m in metrics.split(",")]
    return list(dict.fromkeys(registry.get(m).name for m in metrics))


def check_method_params(
    method_params: Mapping | None, methods: Sequence[str], model: nn.Module | None = None
) -> dict[str, dict]:
    """Each method's parameters checked by the method's own declaration (with
    ``model``: layer names too); a method not evaluated, or a baseline given
    parameters, is refused."""
    from ..attribution import get

    if method_params is None:
        return {}
    if not isinstance(method_params, Mapping):
        raise InputError(
            f"method_params must map method names to parameters, got {method_params!r}"
        )
    stray = sorted(set(method_params) - set(methods))
    if stray:
        raise InputError(f"method parameters name methods that are not run: {', '.join(stray)}")
    out = {}
    for name, params in method_params.items():
        if name in BASELINE_METHODS:
            if params:
                raise InputError(f"baseline {name!r} takes no parameters, got {params!r}")
            out[name] = {}
        else:
            out[name] = get(name).check_params(params, model)
    return out


def check_metric_params(metric_params: Mapping | None, metrics: Sequence[str]) -> dict[str, dict]:
    """Each metric's settings checked against its declaration (its entry's ``params``)."""
    if metric_params is None:
        return {}
    if not isinstance(metric_params, Mapping):
        raise InputError(f"metric_params must map metric names to settings, got {metric_params!r}")
    metric_params = {registry.canonical(m): p for m, p in metric_params.items()}
    stray = sorted(set(metric_params) - set(metrics))
    if stray:
        raise InputError(f"metric parameters name metrics that are not scored: {', '.join(stray)}")
    return {m: check_params(m, p, registry.get(m).params) for m, p in metric_params.items()}


RUN_SETTINGS = {
    "chunk": Param("int", 32, min=1, help="images per saved unit"),
    "sanity_images": Param("int", 32, min=0),
    "batch_size": Param("int", None, min=1, none=True, help="none: automatic"),
    "memory": MEMORY,
    "seed": Param("int", 0),
}


def with_memory(name: str, params: dict, memory: object) -> dict:
    """``params`` of method ``name`` with the run's ``memory`` budget where the method
    takes one and its own parameters set none."""
    if memory is None or name in BASELINE_METHODS or "memory" in params:
        return params
    from ..attribution import get

    return {**params, "memory": memory} if "memory" in get(name).accepted(params) else params


def validate(
    model: nn.Module | None,
    *,
    methods: str | Sequence[str],
    metrics: str | Sequence[str],
    method_params: Mapping | None = None,
    metric_params: Mapping | None = None,
    **settings: object,
) -> tuple[list[str], list[str], dict[str, dict], dict[str, dict]]:
    """Every input of :func:`evaluate` checked before any work or write: method and
    metric names, their parameters (layers against ``model``), and ``settings``
    (``chunk``, ``sanity_images``, ``batch_size``, ``memory``, ``seed``). Returns the method
    names (with the baselines), metric names and both parameter mappings."""
    check_params("evaluate", settings, RUN_SETTINGS)
    names = resolve_methods(methods)
    metric_names = resolve_metrics(metrics)
    return (
        names,
        metric_names,
        check_method_params(method_params, names, model),
        check_metric_params(metric_params, metric_names),
    )


def _score_chunk(
    model: nn.Module,
    x: torch.Tensor,
    method: str,
    fn: Callable,
    metrics: list[str],
    *,
    boxes: torch.Tensor | None,
    masks: torch.Tensor | None,
    sanity_rows: int,
    batch_size: int | None,
    seed: int,
    metric_params: dict[str, dict] | None = None,
    memory: int | float | str | None = None,
) -> dict[str, torch.Tensor]:
    """Explain ``x`` with one method and score it; flat dict ``metric/values``, ``metric/curve``."""
    with frozen(model):
        with torch.no_grad():
            target = model(x).argmax(1)
    expl = fn(model, x, target)
    out, _x = score_explanation(
        model,
        x,
        method,
        fn,
        expl,
        target,
        metrics,
        boxes=boxes,
        masks=masks,
        sanity_rows=sanity_rows,
        batch_size=batch_size,
        seed=seed,
        metric_params=metric_params,
        memory=memory,
    )
    return out


def score_explanation(
    model: nn.Module,
    x: torch.Tensor,
    method: str,
    fn: Callable,
    expl: object,
    target: torch.Tensor,
    metrics: list[str],
    *,
    boxes: torch.Tensor | None,
    masks: torch.Tensor | None,
    sanity_rows: int,
    batch_size: int | None,
    seed: int,
    metric_params: dict[str, dict] | None = None,
    memory: int | float | str | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Score the explanation ``expl`` of ``x`` for ``target`` (made by ``fn``) with every
    metric: the flat dict of :func:`_score_chunk` and the curves' abscissae ``{metric: x}``
    (used by dataset-scale jobs, :mod:`cnnlens.jobs`, which keep the maps too)."""
    from ..attribution import get

    maps = expl.maps if hasattr(expl, "maps") else expl
    out: dict[str, torch.Tensor] = {}
    xs: dict[str, torch.Tensor] = {}
    extra = {registry.canonical(m): p for m, p in (metric_params or {}).items()}
    job = registry.Scoring(
        model, x, maps, expl, target, method, fn, boxes=boxes, masks=masks,
        sanity_rows=sanity_rows, batch_size=batch_size, memory=memory, seed=seed,
        complete=method not in BASELINE_METHODS and get(method).complete,
    )  # fmt: skip
    for name in metrics:
        metric = registry.get(name)
        name = metric.name
        if "ground-truth" in metric.needs and boxes is None and masks is None:
            continue
        if "complete-method" in metric.needs and not job.complete:
            continue
        for key, value in metric.score(job, **dict(extra.get(name, {}))).items():
            if key == "x":
                xs[name] = value
            else:
                out[key if "/" in key else f"{name}/{key}"] = value
    return {k: v.detach().float().cpu() for k, v in out.items()}, {
        k: v.detach().float().cpu() for k, v in xs.items()
    }


@with_autograd
def evaluate(
    model: nn.Module,
    inputs: torch.Tensor | object,
    *,
    methods: str | Sequence[str] = "all",
    metrics: str | Sequence[str] = "all",
    boxes: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    images: Sequence[int] | None = None,
    method_params: dict[str, dict] | None = None,
    metric_params: dict[str, dict] | None = None,
    chunk: int = 32,
    sanity_images: int = 32,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
) -> Evaluation:
    """Explain ``inputs`` with every method (plus random and Sobel) and score every metric.

    ``inputs`` is a normalised batch ``[N,C,H,W]`` or any data
    :func:`~cnnlens.data.as_dataset` accepts: then all its images are scored (use
    ``subset`` for fewer), read chunk by chunk, with its boxes and masks by default.
    The class explained and scored is the model's top-1 per image. ``boxes``
    / ``masks`` enable the localisation metrics (bbox score uses boxes when
    given; the pointing games use masks when given). The sanity check runs on
    the first ``sanity_images`` images (the cascade re-explains them once per
    block). ``method_params`` maps a method name to its hyperparameters,
    ``metric_params`` a metric name to its settings (e.g. ``{"deletion":
    {"step": 32}}``; the defaults reproduce the papers' protocols).
    ``metrics="all"`` is the table of registered metrics; the optional ones
    (``max-sensitivity``, ``infidelity``, ``road``) run only when named.
    ``out`` is no longer taken here: a resumable evaluation saved to a folder is a job
    (``cnnlens evaluate --out``, :func:`cnnlens.jobs.run`). ``memory``
    (bytes or a size such as ``"2GiB"``; default a share of the free memory) bounds
    the expanded chunks of every metric and of every method that takes it.
    """
    from ..attribution.base import check_inputs
    from ..placement import model_device

    if out is not None:
        raise ConfigError(
            "cnnlens.evaluate no longer saves its work: a resumable evaluation written to a "
            "folder is a job (cnnlens evaluate --out DIR, or cnnlens.jobs.run(model=..., "
            "store=DIR, ...)); call evaluate without out="
        )
    if isinstance(inputs, torch.Tensor):
        inputs = check_inputs(inputs, model)
        n = inputs.shape[0]

        def chunk_of(start: int, stop: int) -> torch.Tensor:
            return inputs[start:stop]
    else:
        data = as_dataset(inputs)
        n = len(data)
        boxes = data.boxes if boxes is None else boxes
        masks = data.masks if masks is None else masks

        def chunk_of(start: int, stop: int) -> torch.Tensor:
            return check_inputs(data.tensors(range(start, stop))[0], model)

    device = model_device(model)
    names, metric_names, method_params, metric_params = validate(
        model,
        methods=methods,
        metrics=metrics,
        method_params=method_params,
        metric_params=metric_params,
        chunk=chunk,
        sanity_images=sanity_images,
        batch_size=batch_size,
        memory=memory,
        seed=seed,
    )
    images = list(range(n)) if images is None else [int(i) for i in images]
    if len(images) != n:
        raise InputError(f"images must name one index per input ({n}), got {len(images)}")
    settings = {
        "metrics": metric_names,
        "method_params": method_params,
        "metric_params": metric_params,
        "chunk": chunk,
        "sanity_images": sanity_images,
        "seed": seed,
        "images": images,
    }
    result = Evaluation(images=images, params={**settings, "methods": names})
    starts = list(range(0, n, chunk))
    fns = {m: _method_fn(m, with_memory(m, method_params.get(m, {}), memory), seed) for m in names}
    parts: dict[str, list[dict[str, torch.Tensor]]] = {m: [] for m in names}
    with Progress(total=len(names) * len(starts), desc="evaluate", enabled=progress) as bar:
        for s in starts:
            e = min(s + chunk, n)
            for method in names:
                part = _score_chunk(
                    model,
                    chunk_of(s, e).to(device),
                    method,
                    fns[method],
                    metric_names,
                    boxes=None if boxes is None else boxes[s:e],
                    masks=None if masks is None else masks[s:e].to(device),
                    sanity_rows=max(0, sanity_images - s),
                    batch_size=batch_size,
                    seed=seed,
                    metric_params=metric_params,
                    memory=memory,
                )
                parts[method].append(part)
                bar.update(1)
    for method in names:
        _collect(result, method, parts[method])
    result.sanity_fails = sanity_verdicts(result.values)
    return result


def sanity_verdicts(values: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, bool]:
    """Per method, whether it fails the model-randomisation check (Adebayo et al. 2018): its
    maps of the fully randomised model still correlate with the trained model's (mean
    ``randomisation-final`` >= 0.5); methods without the check are left out."""
    verdicts = {}
    for method, per_metric in values.items():
        final = per_metric.get("randomisation-final")
        if final is not None and (~torch.isnan(final)).any():
            verdicts[method] = bool(torch.nanmean(final) >= 0.5)
    return verdicts


def _collect(result: Evaluation, method: str, parts: list[dict[str, torch.Tensor]]) -> None:
    keys = []
    for p in parts:
        keys += [k for k in p if k not in keys]
    values, curves = {}, {}
    for key in keys:
        present = [p[key] for p in parts if key in p]
        if len(present) != len(parts):
            if key.endswith("/curve"):
                continue
            raise ConfigError(f"inconsistent chunks for {method}: {key} missing in some")
        joined = torch.cat(present)
        metric, kind = key.split("/", 1)
        if kind == "values":
            values[metric] = joined
        else:
            curves[metric + ("" if kind == "curve" else "-" + kind[6:])] = joined
    result.values[method] = values
    result.curves[method] = curves

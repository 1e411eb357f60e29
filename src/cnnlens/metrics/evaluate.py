"""``cnnlens.evaluate``: explain a batch with several methods and score every map with
every metric, in one pass, resumably; the method x metric table of the issue.

Work is cut into (method, image chunk) units. With ``out`` each finished
unit is saved atomically as ``out/parts/<method>/<first image>.safetensors``;
a later call with the same settings loads it instead of recomputing, so an
interrupted job resumes where it stopped. The random-map and Sobel-edge
baselines are always evaluated next to the methods.

``metrics="all"`` is the table of :data:`METRICS`. The optional metrics of
:data:`OPTIONAL_METRICS` (``max_sensitivity``, ``infidelity``, ``road``) run
only when named, e.g. ``metrics=["deletion", "road"]``: max-sensitivity
re-explains every image ``samples`` times and ROAD solves one sparse system
per image and fraction, too slow for the default table.
"""

from __future__ import annotations

import json
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
from .baselines import random_map, sobel_map
from .causal import PARAMS as CAUSAL_PARAMS
from .causal import deletion, insertion
from .completeness import PARAMS as COMPLETENESS_PARAMS
from .completeness import completeness
from .degradation import PARAMS as DEGRADATION_PARAMS
from .degradation import default_tiles, degradation
from .infidelity import PARAMS as INFIDELITY_PARAMS
from .infidelity import infidelity
from .localisation import (
    BBOX_PARAMS,
    ENERGY_PARAMS,
    POINTING_PARAMS,
    bbox_score,
    energy_pointing_game,
    pointing_game,
)
from .result import ci95
from .road import PARAMS as ROAD_PARAMS
from .road import road
from .sanity import PARAMS as SANITY_PARAMS
from .sanity import randomisation_check
from .sensitivity import PARAMS as SENSITIVITY_PARAMS
from .sensitivity import max_sensitivity

BASELINE_METHODS = ("random", "sobel")
# Methods whose attributions should sum to f(x) - f(baseline).
COMPLETE_METHODS = ("integrated-gradients", "deeplift", "lrp")
# Metric names of the table; "lower" marks metrics where lower is better.
METRICS = {
    "deletion": "RISE deletion AUC (lower is better)",
    "insertion": "RISE insertion AUC",
    "degradation_small": "mean LeRF - MoRF, small tiles (8x8 at 224)",
    "degradation_large": "mean LeRF - MoRF, large tiles (14x14 at 224)",
    "bbox_score": "share of the top-n pixels inside the box",
    "pointing_game": "map maximum on the object (with tolerance)",
    "energy_pointing_game": "share of positive energy on the object",
    "randomisation": "Spearman original vs top-layer-randomised maps (lower is better)",
    "completeness": "|sum attributions - (f(x) - f(0))| (lower is better)",
}
# Opt-in metrics: selected by name only, never by "all".
OPTIONAL_METRICS = {
    "max_sensitivity": "max relative map change under 2 % uniform noise (lower is better)",
    "infidelity": "beta-scaled MSE of I . map vs f(x) - f(x - I), Gaussian I (lower is better)",
    "road": "ROAD MoRF: mean probability, noisy linear imputation (lower is better)",
}
# The settings each metric takes in ``metric_params`` (declared next to the metric).
METRIC_PARAMS = {
    "deletion": CAUSAL_PARAMS,
    "insertion": CAUSAL_PARAMS,
    "degradation_small": DEGRADATION_PARAMS,
    "degradation_large": DEGRADATION_PARAMS,
    "bbox_score": BBOX_PARAMS,
    "pointing_game": POINTING_PARAMS,
    "energy_pointing_game": ENERGY_PARAMS,
    "randomisation": SANITY_PARAMS,
    "completeness": COMPLETENESS_PARAMS,
    "max_sensitivity": SENSITIVITY_PARAMS,
    "infidelity": INFIDELITY_PARAMS,
    "road": ROAD_PARAMS,
}
LOWER_IS_BETTER = {
    "deletion",
    "randomisation",
    "randomisation_final",
    "completeness",
    "max_sensitivity",
    "infidelity",
    "road",
}


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
        arrow = {m: " ↓" if m in LOWER_IS_BETTER else " ↑" for m in metrics}
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
    """``"all"`` means the :data:`METRICS` table; optional metrics only when named."""
    if isinstance(metrics, str):
        metrics = list(METRICS) if metrics == "all" else [m.strip() for m in metrics.split(",")]
    for m in metrics:
        if m not in METRICS and m not in OPTIONAL_METRICS:
            known = ", ".join([*METRICS, *OPTIONAL_METRICS])
            raise InputError(f"unknown metric {m!r}; known: {known}")
    return list(dict.fromkeys(metrics))


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
    """Each metric's settings checked against its declaration (:data:`METRIC_PARAMS`)."""
    if metric_params is None:
        return {}
    if not isinstance(metric_params, Mapping):
        raise InputError(f"metric_params must map metric names to settings, got {metric_params!r}")
    stray = sorted(set(metric_params) - set(metrics))
    if stray:
        raise InputError(f"metric parameters name metrics that are not scored: {', '.join(stray)}")
    return {m: check_params(m, p, METRIC_PARAMS[m]) for m, p in metric_params.items()}


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
    maps = expl.maps if hasattr(expl, "maps") else expl
    out: dict[str, torch.Tensor] = {}
    xs: dict[str, torch.Tensor] = {}
    small, large = default_tiles(min(x.shape[2:]))
    n = x.shape[0]
    extra = metric_params or {}
    for metric in metrics:
        kw = dict(extra.get(metric, {}))
        if metric in ("deletion", "insertion"):
            f = deletion if metric == "deletion" else insertion
            r = f(model, x, maps, target, batch_size=batch_size, memory=memory, **kw)
            out[f"{metric}/values"], out[f"{metric}/curve"] = r.values, r.curves
            xs[metric] = r.x
        elif metric.startswith("degradation"):
            kw.setdefault("tile", small if metric.endswith("small") else large)
            r = degradation(model, x, maps, target, batch_size=batch_size, memory=memory, **kw)
            out[f"{metric}/values"] = r.values
            out[f"{metric}/curve_morf"] = r.extras["morf"]
            out[f"{metric}/curve_lerf"] = r.extras["lerf"]
        elif metric in ("bbox_score", "pointing_game", "energy_pointing_game"):
            if boxes is None and masks is None:
                continue
            f = {"bbox_score": bbox_score, "pointing_game": pointing_game}.get(
                metric, energy_pointing_game
            )
            gt = (
                {"boxes": boxes}
                if (metric == "bbox_score" and boxes is not None)
                else ({"masks": masks} if masks is not None else {"boxes": boxes})
            )
            out[f"{metric}/values"] = f(None, None, maps, **gt, **kw).values
        elif metric == "randomisation":
            k = min(sanity_rows, n)
            vals = torch.full((n,), float("nan"))
            final = torch.full((n,), float("nan"))
            if k > 0:
                kw.setdefault("seed", seed)
                r = randomisation_check(model, x[:k], maps[:k], target[:k], method=fn, **kw)
                vals[:k], final[:k] = r.values.cpu(), r.extras["final_spearman"].cpu()
                out["randomisation/curve"] = torch.cat(
                    [r.curves.cpu(), torch.full((n - k, r.curves.shape[1]), float("nan"))]
                )
            out["randomisation/values"] = vals
            out["randomisation_final/values"] = final
        elif metric == "completeness":
            if not any(method.startswith(c) for c in COMPLETE_METHODS):
                continue
            out["completeness/values"] = completeness(model, x, expl, target, **kw).values
        elif metric == "max_sensitivity":
            kw.setdefault("seed", seed)
            r = max_sensitivity(
                model, x, maps, target, method=fn, batch_size=batch_size, memory=memory, **kw
            )
            out["max_sensitivity/values"] = r.values
        elif metric == "infidelity":
            kw.setdefault("seed", seed)
            r = infidelity(model, x, maps, target, batch_size=batch_size, memory=memory, **kw)
            out["infidelity/values"] = r.values
        elif metric == "road":
            kw.setdefault("seed", seed)
            r = road(model, x, maps, target, batch_size=batch_size, memory=memory, **kw)
            out["road/values"], out["road/curve"] = r.values, r.curves
            if r.x is not None:
                xs["road"] = r.x
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
    ``metrics="all"`` is the :data:`METRICS` table; ``max_sensitivity``,
    ``infidelity`` and ``road`` (:data:`OPTIONAL_METRICS`) run only when named.
    With ``out`` finished (method, chunk) units are saved and reused. ``memory``
    (bytes or a size such as ``"2GiB"``; default a share of the free memory) bounds
    the expanded chunks of every metric and of every method that takes it.
    """
    from ..attribution.base import check_inputs
    from ._common import model_device

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
    if out is not None:
        out = Path(out)
        _check_settings(out, settings)
    result = Evaluation(images=images, params={**settings, "methods": names})
    starts = list(range(0, n, chunk))
    fns = {m: _method_fn(m, with_memory(m, method_params.get(m, {}), memory), seed) for m in names}
    parts: dict[str, list[dict[str, torch.Tensor]]] = {m: [] for m in names}
    # Chunk-major order: an interrupted run has every method on its first images.
    with Progress(total=len(names) * len(starts), desc="evaluate", enabled=progress) as bar:
        for s in starts:
            e = min(s + chunk, n)
            for method in names:
                path = (
                    None if out is None else out / "parts" / method / f"{images[s]:07d}.safetensors"
                )
                part = _load_part(path)
                if part is None:
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
                    if path is not None:
                        from ..io import save_tensors

                        save_tensors(path, part)
                parts[method].append(part)
                bar.update(1)
    for method in names:
        _collect(result, method, parts[method])
    for method, per_metric in result.values.items():
        final = per_metric.get("randomisation_final")
        if final is not None and (~torch.isnan(final)).any():
            result.sanity_fails[method] = bool(torch.nanmean(final) >= 0.5)
    return result


def _load_part(path: Path | None) -> dict[str, torch.Tensor] | None:
    if path is None or not path.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(path))


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
            raise ConfigError(f"inconsistent saved parts for {method}: {key} missing in some")
        joined = torch.cat(present)
        metric, kind = key.split("/", 1)
        if kind == "values":
            values[metric] = joined
        else:
            curves[metric + ("" if kind == "curve" else kind[5:])] = joined
    result.values[method] = values
    result.curves[method] = curves


def _check_settings(out: Path, settings: dict) -> None:
    from ..io import write_json

    path = out / "evaluation.json"
    current = json.loads(json.dumps(settings))
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != current:
            diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise ConfigError(
                f"{out} holds an evaluation with other settings ({', '.join(diff)} differ); "
                "use another --out or delete that folder"
            )
    else:
        write_json(path, current)

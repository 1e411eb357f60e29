"""Metrics by name: each metric module registers its entry with what the faces need.

An entry (:class:`Metric`) carries the id (hyphenated, e.g. ``pointing-game``), a
one-line description, whether lower is better, whether it is a curve or a scalar,
what it needs (:data:`NEEDS`), its declared settings (``params``) and ``score``, the
step :func:`cnnlens.metrics.evaluate.score_explanation` runs for it. ``names()`` and
``get(name)`` read the registry (``cnnlens.metrics.names()``, ``cnnlens.metrics.get``);
the modules of this package are imported on first use, so a new metric is one file.

Ids were underscored before (``degradation_small``, ``pointing_game``); those spellings
are still accepted for one release, with a one-time deprecation note (:func:`canonical`).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..params import Param

# What a metric may need besides the maps: ``model`` (it runs the model), ``ground-truth``
# (object masks or boxes; skipped without them), ``method`` (it re-explains with the
# method), ``complete-method`` (maps that sum to f(x) - f(baseline); skipped otherwise).
NEEDS = ("model", "ground-truth", "method", "complete-method")
KINDS = ("scalar", "curve")
# What a metric checks (Quantus' groups; the verdict recommends per family): faithfulness
# (the model's output follows the map), localisation (the map falls on the object),
# robustness (the map is stable under small input changes), randomisation (the map changes
# with the model: the sanity checks), complexity (the map is concise), axiomatic (a property
# such as completeness holds).
FAMILIES = (
    "faithfulness",
    "localisation",
    "robustness",
    "randomisation",
    "complexity",
    "axiomatic",
)
_INFRASTRUCTURE = {
    "registry",
    "evaluate",
    "outputs",
    "result",
    "baselines",
    "similarity",
    "verdict",
    "meta",
}


@dataclass
class Scoring:
    """One explanation to score: the model, images ``x``, the explanation (``expl``,
    its ``maps``), targets, the method's name and ``fn(model, x, target)`` that
    re-explains, the ground truth when known, and the run's settings."""

    model: nn.Module | None
    x: torch.Tensor
    maps: torch.Tensor
    expl: Any
    target: torch.Tensor
    method: str
    fn: Callable
    boxes: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    sanity_rows: int = 0
    batch_size: int | None = None
    memory: int | float | str | None = None
    seed: int = 0
    complete: bool = False


@dataclass(frozen=True)
class Metric:
    """A registered metric. ``score(scoring, **settings)`` returns ``{"values": [N],
    ...}``: further keys are curves (``"curve"``, ``"curve_<part>"``), ``"x"`` (a curve's
    abscissae) and, with a ``/``, values of the names in ``also`` (``"<name>/values"``).
    ``curves`` maps a plotted curve's suffix (``""``, ``"-morf"``) to (title, x label);
    ``default``: part of ``"all"``; ``order``: its place in the table; ``family``: what it
    checks (one of :data:`FAMILIES`; most metrics score faithfulness, the default)."""

    name: str
    description: str
    score: Callable[..., dict[str, torch.Tensor]]
    lower_is_better: bool = False
    kind: str = "scalar"
    needs: tuple[str, ...] = ("model",)
    params: Mapping[str, Param] = field(default_factory=dict)
    default: bool = True
    order: int = 100
    curves: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    also: Mapping[str, str] = field(default_factory=dict)
    family: str = "faithfulness"

    def __post_init__(self) -> None:
        bad = [n for n in self.needs if n not in NEEDS]
        if self.kind not in KINDS or bad or self.name != self.name.lower() or "_" in self.name:
            raise InputError(
                f"metric {self.name!r}: ids are lower-case and hyphenated, kind one of "
                f"{KINDS}, needs among {NEEDS} (got {self.kind!r}, {bad})"
            )
        if self.family not in FAMILIES:
            raise InputError(
                f"metric {self.name!r}: family must be one of {', '.join(FAMILIES)}, "
                f"got {self.family!r}"
            )


_METRICS: dict[str, Metric] = {}
_ALSO: dict[str, Metric] = {}  # a value another metric reports -> that metric
_DISCOVERED: list[bool] = []
_WARNED: set[str] = set()


def register(metric: Metric) -> Metric:
    """Make ``metric`` reachable by its name (called by the metric's own module)."""
    _METRICS[metric.name] = metric
    for name in metric.also:
        _ALSO[name] = metric
    return metric


def _discover() -> None:
    if _DISCOVERED:
        return
    _DISCOVERED.append(True)
    package = __name__.rsplit(".", 1)[0]
    for info in pkgutil.iter_modules(sys.modules[package].__path__):
        if info.name not in _INFRASTRUCTURE and not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def canonical(name: str, *, warn: bool = True) -> str:
    """The id of ``name``: itself, or for an old underscored spelling its hyphenated id
    (with a one-time :class:`DeprecationWarning` and a note on stderr when ``warn``).
    Unknown names come back as given."""
    _discover()
    if name in _METRICS or name in _ALSO or not isinstance(name, str):
        return name
    new = name.replace("_", "-")
    if new != name and (new in _METRICS or new in _ALSO):
        if warn and name not in _WARNED:
            _WARNED.add(name)
            note = (
                f"metric name {name!r} is deprecated; use {new!r} (the old one goes next release)"
            )
            print(f"cnnlens: {note}", file=sys.stderr)
            warnings.warn(note, DeprecationWarning, stacklevel=3)
        return new
    return name


def names(*, optional: bool = True) -> list[str]:
    """Registered metric ids in table order; ``optional=False``: only those of ``"all"``."""
    _discover()
    ordered = sorted(_METRICS.values(), key=lambda m: (m.order, m.name))
    return [m.name for m in ordered if optional or m.default]


def get(name: str) -> Metric:
    """The metric registered as ``name`` (old underscored spellings accepted)."""
    name = canonical(name)
    if name not in _METRICS:
        close = difflib.get_close_matches(str(name), list(_METRICS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(
            f"unknown metric {name!r}{hint} (known: {', '.join(names())}; "
            "see cnnlens.metrics.names())"
        )
    return _METRICS[name]


def lower_is_better(name: str) -> bool:
    """Whether lower values of metric ``name`` (or of a value a metric reports) are better."""
    name = canonical(name, warn=False)
    entry = _METRICS.get(name) or _ALSO.get(name)
    return bool(entry and entry.lower_is_better)


def family(name: str) -> str:
    """The family (:data:`FAMILIES`) of a metric or of a value a metric reports (its
    metric's); ``""`` for a name no metric registers."""
    name = canonical(name, warn=False)
    entry = _METRICS.get(name) or _ALSO.get(name)
    return entry.family if entry else ""


def describe(name: str) -> str:
    """The one-line description of a metric or of a value a metric reports."""
    name = canonical(name, warn=False)
    if name in _METRICS:
        return _METRICS[name].description
    return _ALSO[name].also[name] if name in _ALSO else ""


def plotted_curves() -> dict[str, tuple[str, str]]:
    """``{curve name: (title, x label)}`` of every registered curve that is plotted."""
    return {m + suffix: v for m in names() for suffix, v in _METRICS[m].curves.items()}


def canonical_key(key: str) -> str:
    """A stored ``<metric>/<kind>`` key (or a curve name) under the metric's current id,
    for results written before the ids were hyphenated (read silently)."""
    metric, sep, rest = key.partition("/")
    new = canonical(metric, warn=False)
    if new == metric and "_" in metric:  # a curve name: degradation_small_morf
        head, _, tail = metric.rpartition("_")
        joined = canonical(head, warn=False)
        if joined != head or joined in _METRICS:
            new = f"{joined}-{tail}"
    return new + sep + rest

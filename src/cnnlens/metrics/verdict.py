"""A verdict per model: which explanation methods beat the baselines, on which kind of metric.

Method rankings change with the model and with the metric (Meta-Rank, 2024), so a verdict
is made for the model at hand, from an :class:`~cnnlens.metrics.evaluate.Evaluation` of its
methods x metrics, and it never folds the metrics into one score:

- every cell gets a 95 % percentile-bootstrap interval of its mean over images (Efron and
  Tibshirani 1993, ch. 13): the images are resampled with replacement, the same resample
  for every cell (seeded), so the cells of one replicate are paired;
- a method *beats* a baseline on a metric when its interval lies wholly on the metric's
  better side of the baseline's interval, *loses* when it lies wholly on the worse side,
  and *ties* when the two overlap (a conservative test: non-overlapping 95 % intervals);
  it beats the baselines when it beats both the ``random`` map and the ``sobel`` edge map;
- the rank agreement between metrics is Kendall's tau-b (Kendall 1945) between the
  rankings of the methods by each metric's mean (oriented so that rank 1 is the best);
- the recommendation is given per metric family (the metric's registry entry: faithfulness,
  localisation, robustness, randomisation, complexity, axiomatic), with the numbers behind it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from . import registry
from .evaluate import BASELINE_METHODS, Evaluation

OUTCOMES = ("beats", "ties", "loses")


@dataclass(frozen=True)
class Cell:
    """One method on one metric: mean over images, its 95 % interval, images with a value."""

    mean: float
    low: float
    high: float
    n: int

    def text(self) -> str:
        if math.isnan(self.mean):
            return "–"
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_cells(
    values: torch.Tensor, *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Means over the last axis of ``values`` ``[..., N]`` (NaN: no value) and their
    percentile-bootstrap interval at ``level``: ``(mean, low, high)``, each ``[...]``.

    One resample of the N images (drawn with an explicit generator from ``seed``) serves
    every cell, as counts ``W [B, N]``, so a replicate's mean is a weighted mean."""
    v = values.double()
    n = v.shape[-1]
    ok = ~torch.isnan(v)
    filled = torch.where(ok, v, torch.zeros_like(v)).reshape(-1, n)
    present = ok.double().reshape(-1, n)
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randint(n, (resamples, n), generator=gen)
    counts = torch.zeros(resamples, n, dtype=torch.float64)
    counts.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    with torch.no_grad():
        sums = filled @ counts.T  # [cells, B]
        kept = present @ counts.T
        reps = torch.where(kept > 0, sums / kept.clamp_min(1), torch.full_like(sums, math.nan))
        alpha = (1 - level) / 2
        low = torch.nanquantile(reps, alpha, dim=1)
        high = torch.nanquantile(reps, 1 - alpha, dim=1)
        mean = filled.sum(1) / present.sum(1)  # NaN where no image has a value
    shape = v.shape[:-1]
    return mean.reshape(shape), low.reshape(shape), high.reshape(shape)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two score lists (ties in either handled; NaN entries dropped
    pairwise); NaN when fewer than two items are left or one list is constant."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            da = pairs[i][0] - pairs[j][0]
            db = pairs[i][1] - pairs[j][1]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denom if denom > 0 else math.nan


def compare(method: Cell, baseline: Cell, lower_is_better: bool) -> str:
    """``beats`` / ``loses`` when the two intervals do not overlap (on the metric's better /
    worse side), ``ties`` when they do, ``n/a`` when either has no value."""
    if math.isnan(method.mean) or math.isnan(baseline.mean):
        return "n/a"
    if lower_is_better:
        better, worse = method.high < baseline.low, method.low > baseline.high
    else:
        better, worse = method.low > baseline.high, method.high < baseline.low
    return "beats" if better else ("loses" if worse else "ties")


@dataclass
class Verdict:
    """The verdict of an evaluation: cells with intervals, outcomes against the baselines,
    Kendall's tau between metrics, and the recommendation per metric family."""

    images: int
    methods: list[str]
    metrics: list[str]
    cells: dict[tuple[str, str], Cell]
    outcomes: dict[tuple[str, str], str]
    tau: list[list[float]]
    families: dict[str, list[str]]
    recommendation: list[dict]
    settings: dict = field(default_factory=dict)
    meta: list = field(default_factory=list)  # MetaEvaluation results shown with the verdict

    def lines(self) -> list[str]:
        """The recommendation in plain language, one line per metric family."""
        return [r["text"] for r in self.recommendation]

    def disagreements(self) -> list[tuple[str, str, float]]:
        """Metric pairs whose method rankings disagree (tau < 0)."""
        out = []
        for i, a in enumerate(self.metrics):
            for j in range(i + 1, len(self.metrics)):
                t = self.tau[i][j]
                if not math.isnan(t) and t < 0:
                    out.append((a, self.metrics[j], t))
        return out

    def to_dict(self) -> dict:
        def num(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {
            "images": self.images,
            "settings": self.settings,
            "methods": self.methods,
            "metrics": [
                {
                    "name": m,
                    "family": registry.family(m),
                    "lower_is_better": registry.lower_is_better(m),
                }
                for m in self.metrics
            ],
            "cells": [
                {
                    "method": method,
                    "metric": metric,
                    "mean": num(c.mean),
                    "low": num(c.low),
                    "high": num(c.high),
                    "n": c.n,
                    "outcome": self.outcomes.get((method, metric)),
                }
                for (method, metric), c in self.cells.items()
            ],
            "kendall_tau": {
                "metrics": self.metrics,
                "matrix": [[num(v) for v in row] for row in self.tau],
            },
            "families": self.families,
            "recommendation": self.recommendation,
            "meta": [m.to_dict() for m in self.meta],
        }

    def markdown(self) -> str:
        arrow = {m: " ↓" if registry.lower_is_better(m) else " ↑" for m in self.metrics}
        s = self.settings
        out = [
            "# Verdict",
            "",
            f"{self.images} images. Each cell: mean over images "
            f"[{s.get('level', 0.95):.0%} percentile-bootstrap interval, {s.get('resamples')} "
            f"resamples of the images, seed {s.get('seed')}]. A method beats a baseline on a "
            "metric when the two intervals do not overlap. ↑ higher is better, ↓ lower.",
            "",
            "## Recommendation",
            "",
            *[f"- {line}" for line in self.lines()],
            "",
            "There is no combined score: trust a method for the families where it beats both "
            "baselines, and read the numbers.",
            "",
            "## Methods x metrics",
            "",
            "| method | " + " | ".join(m + arrow[m] for m in self.metrics) + " |",
            "|---" * (len(self.metrics) + 1) + "|",
        ]
        for method in self.methods:
            row = []
            for metric in self.metrics:
                cell = self.cells[(method, metric)].text()
                outcome = self.outcomes.get((method, metric))
                mark = {"beats": " ✓", "loses": " ✗"}.get(outcome or "", "")
                row.append(cell + mark)
            out.append(f"| {method} | " + " | ".join(row) + " |")
        out += [
            "",
            "✓ beats both baselines, ✗ loses to one, no mark: ties (or a baseline).",
            "",
            "## Rank agreement between metrics (Kendall tau-b of the method rankings)",
            "",
            "| | " + " | ".join(self.metrics) + " |",
            "|---" * (len(self.metrics) + 1) + "|",
        ]
        for name, row in zip(self.metrics, self.tau, strict=True):
            cells = ["–" if math.isnan(v) else f"{v:+.2f}" for v in row]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        pairs = self.disagreements()
        if pairs:
            out += ["", "Metrics that rank the methods in opposite ways: " + "; ".join(
                f"{a} vs {b} (tau {t:+.2f})" for a, b, t in pairs
            ) + "."]  # fmt: skip
        for meta in self.meta:
            out += ["", meta.markdown()]
        return "\n".join(out) + "\n"


def _evidence(method: str, metric: str, cells: dict) -> str:
    base = ", ".join(f"{b} {cells[(b, metric)].text()}" for b in BASELINE_METHODS)
    return f"{metric} {cells[(method, metric)].text()} vs {base}"


def _family_line(family: str, names: list[str], methods: list[str], outcomes, cells) -> dict:
    """The recommendation of one family: each method's outcomes over its metrics."""
    groups: dict[str, list[str]] = {"beats": [], "mixed": [], "ties": [], "loses": []}
    evidence: dict[str, str] = {}
    for method in methods:
        got = {m: outcomes[(method, m)] for m in names if outcomes[(method, m)] != "n/a"}
        if not got:
            continue
        kinds = set(got.values())
        group = kinds.pop() if len(kinds) == 1 else "mixed"
        groups[group].append(method)
        if group == "beats":
            evidence[method] = "; ".join(_evidence(method, m, cells) for m in got)
        elif group == "mixed":
            evidence[method] = ", ".join(
                f"{o} on {', '.join(m for m in got if got[m] == o)}"
                for o in OUTCOMES
                if o in got.values()
            )
    title = f"**{family}** ({', '.join(names)})"
    parts = []
    if groups["beats"]:
        parts.append(
            "beat both baselines on every metric: "
            + "; ".join(f"{m} ({evidence[m]})" for m in groups["beats"])
        )
    else:
        parts.append("no method beats both baselines on every metric")
    if groups["mixed"]:
        parts.append("mixed: " + "; ".join(f"{m} ({evidence[m]})" for m in groups["mixed"]))
    if groups["ties"]:
        parts.append("tie with a baseline: " + ", ".join(groups["ties"]))
    if groups["loses"]:
        parts.append("lose to a baseline: " + ", ".join(groups["loses"]))
    return {"family": family, "metrics": names, **groups, "evidence": evidence,
            "text": f"{title}: " + ". ".join(parts) + "."}  # fmt: skip


def verdict(
    evaluation: Evaluation, *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> Verdict:
    """The verdict of ``evaluation`` (which must hold the ``random`` and ``sobel`` baselines,
    as :func:`cnnlens.evaluate` and ``cnnlens evaluate`` always add them): intervals from
    ``resamples`` bootstrap resamples of the images (``seed``), outcomes, tau, recommendation."""
    missing = [b for b in BASELINE_METHODS if b not in evaluation.values]
    if missing:
        raise InputError(
            f"a verdict compares methods with the baselines, but the evaluation has no "
            f"{', '.join(missing)}; evaluate with cnnlens.evaluate (it adds them)"
        )
    if resamples < 2 or not 0 < level < 1:
        raise InputError(f"resamples must be >= 2 and 0 < level < 1, got {resamples}, {level}")
    methods = list(evaluation.values)
    metrics: list[str] = []
    for per_metric in evaluation.values.values():
        metrics += [m for m in per_metric if m not in metrics]
    if not metrics:
        raise InputError("the evaluation has no metric values to judge")
    n = len(evaluation.images)
    table = torch.full((len(methods), len(metrics), n), math.nan, dtype=torch.float64)
    for i, method in enumerate(methods):
        for j, metric in enumerate(metrics):
            vals = evaluation.values[method].get(metric)
            if vals is not None:
                table[i, j] = vals.double().flatten()[:n]
    mean, low, high = bootstrap_cells(table, resamples=resamples, seed=seed, level=level)
    counts = (~torch.isnan(table)).sum(-1)
    cells = {
        (method, metric): Cell(
            float(mean[i, j]), float(low[i, j]), float(high[i, j]), int(counts[i, j])
        )
        for i, method in enumerate(methods)
        for j, metric in enumerate(metrics)
    }
    lower = {m: registry.lower_is_better(m) for m in metrics}
    outcomes = {}
    for method in methods:
        if method in BASELINE_METHODS:
            continue
        for metric in metrics:
            vs = [compare(cells[(method, metric)], cells[(b, metric)], lower[metric])
                  for b in BASELINE_METHODS]  # fmt: skip
            if "n/a" in vs:
                outcomes[(method, metric)] = "n/a"
            elif all(v == "beats" for v in vs):
                outcomes[(method, metric)] = "beats"
            else:
                outcomes[(method, metric)] = "loses" if "loses" in vs else "ties"
    oriented = {m: [-c if lower[m] else c for c in mean[:, j].tolist()]
                for j, m in enumerate(metrics)}  # fmt: skip
    tau = [[kendall_tau(oriented[a], oriented[b]) for b in metrics] for a in metrics]
    families: dict[str, list[str]] = {}
    for fam in registry.FAMILIES:
        names = [m for m in metrics if registry.family(m) == fam]
        if names:
            families[fam] = names
    real = [m for m in methods if m not in BASELINE_METHODS]
    recommendation = [
        _family_line(fam, names, real, outcomes, cells)
        for fam, names in families.items()
        if any(outcomes[(m, k)] != "n/a" for m in real for k in names)
    ]
    return Verdict(
        images=n, methods=methods, metrics=metrics, cells=cells, outcomes=outcomes, tau=tau,
        families=families, recommendation=recommendation,
        settings={"resamples": resamples, "seed": seed, "level": level},
    )  # fmt: skip

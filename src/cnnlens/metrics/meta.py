"""Meta-evaluation of a metric on the user's model and data (MetaQuantus).

Hedström et al. 2023, "The Meta-Evaluation Problem in Explainable AI: Identifying Reliable
Estimators with MetaQuantus" (TMLR). A metric (an *estimator*) is scored on how it reacts
to perturbations of the evaluation problem, for ``L`` explanation methods on ``N`` images:

- the **minor perturbation test** (resilience, "NR": noise resilience) perturbs so little
  that the metric should not change: the model's parameters multiplied by N(1, 0.001^2)
  noise, or the inputs plus U(-0.001, 0.001) noise; only images whose top-1 class stays
  the same are kept;
- the **disruptive perturbation test** (reactivity, "AR": adversary reactivity) perturbs so
  much that the metric should change: parameters times N(1, 2^2), inputs plus U(-5, 5);
  only images whose top-1 class changes are kept.

Each test is repeated ``K`` times; every repeat re-explains the perturbed problem with every
method (for the class the unperturbed model predicts) and scores it. With ``q`` the
unperturbed scores of a method over the kept images and ``q̂`` its perturbed ones:

- **intra-consistency** (IAC, the paper's Sec. 4.2): the p-value of the two-sided Wilcoxon
  signed-rank test of ``q`` against ``q̂`` (zero differences split, ``zsplit``; normal
  approximation with the tie correction), averaged over methods and repeats: for the
  minor test ``IAC_NR = p`` (the scores should not move), for the disruptive one
  ``IAC_AR = 1 - p`` (they should);
- **inter-consistency** (IEC): for the minor test ``IEC_NR``, the share of (image, rank
  position) pairs at which the methods' order by score is the same before and after;
  for the disruptive test ``IEC_AR``, the share of (method, image) pairs whose unperturbed
  score is strictly better than the perturbed one (the explanation of a broken problem
  should score worse);
- the **meta-consistency** ``MC`` of a perturbation type (model or input) is the mean of its
  four scores. All scores lie in [0, 1]; higher is better.

Intervals (95 %, percentile bootstrap, seeded; no further model pass): IEC's over the
images (an image's perturbed and unperturbed scores resampled together); IAC's over its
``K x L`` (repeat, method) tests, since a p-value is not resampled over images (duplicated
images would shrink it); MC's from the same replicates of its four parts.
"""

from __future__ import annotations

import copy
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InputError
from ..gradmode import with_autograd
from ..hooks import frozen
from ..seeding import Draws, seeded_generator
from . import registry

# the paper's perturbations (MetaQuantus' MNIST/ImageNet suites): (space, kind, size)
TESTS = {
    "model-resilience": ("model", "minor", 0.001),
    "model-adversary": ("model", "disruptive", 2.0),
    "input-resilience": ("input", "minor", 0.001),
    "input-adversary": ("input", "disruptive", 5.0),
}
CRITERIA = ("IAC_NR", "IAC_AR", "IEC_NR", "IEC_AR", "MC")


def wilcoxon_p(d: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Two-sided p-value of the Wilcoxon signed-rank test (Wilcoxon 1945) of the paired
    differences ``d`` ``[R, n]`` (row by row, over the entries where ``valid``): zero
    differences ranked and their ranks split between the signs (Pratt's ``zsplit``), the
    normal approximation with the tie correction, no continuity correction (as
    ``scipy.stats.wilcoxon(..., zero_method="zsplit", method="asymptotic")``). NaN for a row
    with no valid entry; 1 where every difference is zero."""
    d = d.double()
    a = torch.where(valid, d.abs(), torch.full_like(d, math.inf))
    # average ranks of |d| among the valid entries of the row (ties share their mean rank)
    less = (a[:, None, :] < a[:, :, None]) & valid[:, None, :]
    same = (a[:, None, :] == a[:, :, None]) & valid[:, None, :]
    ranks = less.sum(-1) + (same.sum(-1) + 1) / 2
    ranks = torch.where(valid, ranks, torch.zeros_like(ranks))
    sign = torch.where(d > 0, 1.0, torch.where(d == 0, 0.5, 0.0)).double()
    r_plus = (ranks * sign * valid).sum(-1)
    n = valid.sum(-1).double()
    ties = same.sum(-1).double()
    # sum over tie groups of (t^3 - t) = sum over the valid entries of (t^2 - 1)
    correction = torch.where(valid, ties.square() - 1, torch.zeros_like(ties)).sum(-1) / 48
    var = n * (n + 1) * (2 * n + 1) / 24 - correction
    z = (r_plus - n * (n + 1) / 4) / var.clamp_min(1e-300).sqrt()
    p = torch.erfc(z.abs() / math.sqrt(2))
    p = torch.where(var > 0, p, torch.ones_like(p))
    return torch.where(n > 0, p.clamp(0, 1), torch.full_like(p, math.nan))


@dataclass
class MetaEvaluation:
    """A metric's meta-evaluation: ``scores[space][criterion] = (mean, low, high)`` for
    space ``model`` / ``input`` and the criteria IAC_NR, IAC_AR, IEC_NR, IEC_AR, MC;
    ``kept[test]``: the share of (repeat, image) pairs each test kept."""

    metric: str
    methods: list[str]
    images: int
    scores: dict[str, dict[str, tuple[float, float, float]]]
    kept: dict[str, float]
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        def num(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {
            "metric": self.metric,
            "methods": self.methods,
            "images": self.images,
            "scores": {
                space: {
                    c: {"mean": num(m), "low": num(lo), "high": num(hi)}
                    for c, (m, lo, hi) in per.items()
                }
                for space, per in self.scores.items()
            },
            "kept": self.kept,
            "settings": self.settings,
        }

    @staticmethod
    def _cell(v: tuple[float, float, float]) -> str:
        m, lo, hi = v
        return "–" if math.isnan(m) else f"{m:.2f} [{lo:.2f}, {hi:.2f}]"

    def rows(self) -> list[tuple[str, str, list[str]]]:
        """``(metric, space, cells)`` per perturbation space, cells in :data:`CRITERIA` order."""
        return [
            (self.metric, space, [self._cell(per[c]) for c in CRITERIA])
            for space, per in self.scores.items()
        ]

    def markdown(self) -> str:
        out = [
            f"## Meta-evaluation of {self.metric} (MetaQuantus, Hedström et al. 2023)",
            "",
            f"{self.images} images, methods {', '.join(self.methods)}, "
            f"{self.settings.get('perturbations')} perturbations per test; mean [95 % "
            "bootstrap interval]; 1 is best. NR: resilience to minor "
            "perturbations, AR: reactivity to disruptive ones; IAC: the scores' distribution, "
            "IEC: the methods' ranking; MC: their mean.",
            "",
            "| metric | perturbed | " + " | ".join(CRITERIA) + " |",
            "|---" * (len(CRITERIA) + 2) + "|",
        ]
        out += [f"| {m} | {s} | " + " | ".join(c) + " |" for m, s, c in self.rows()]
        return "\n".join(out) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{c.replace('_', '<sub>') + '</sub>' * ('_' in c)}</th>"
                       for c in CRITERIA)  # fmt: skip
        body = "".join(
            f"<tr><td>{html.escape(m)}</td><td>{s}</td>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
            for m, s, cells in self.rows()
        )
        return f"<table><tr><th>metric</th><th>perturbed</th>{head}</tr>{body}</table>"


def _perturbed_model(model: nn.Module, size: float, seed: int) -> nn.Module:
    """A copy of ``model`` whose parameters are multiplied by N(1, size^2) noise."""
    out = copy.deepcopy(model)
    gen = seeded_generator(seed)
    with torch.no_grad():
        for p in out.parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.mul_((1 + size * noise).to(p.device, p.dtype))
    return out.eval()


def _perturbed_inputs(x: torch.Tensor, size: float, seed: int) -> torch.Tensor:
    """``x`` plus U(-size, size) noise; image j gets draw j of the seed."""
    draws = Draws(seed, x.shape[0], tuple(x.shape[1:]), kind="uniform")
    noise = draws(torch.arange(x.shape[0])).to(x.device, x.dtype)
    return x + size * (2 * noise - 1)


@with_autograd
def meta_evaluate(
    model: nn.Module,
    inputs: torch.Tensor,
    metric: str | registry.Metric,
    methods: Sequence[str],
    *,
    boxes: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    method_params: Mapping[str, dict] | None = None,
    metric_params: Mapping | None = None,
    perturbations: int = 3,
    tests: Mapping[str, tuple[str, str, float]] | None = None,
    resamples: int = 500,
    seed: int = 0,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
) -> MetaEvaluation:
    """Meta-evaluate ``metric`` (a registered id, or a :class:`~.registry.Metric`) on
    ``model`` and the normalised images ``inputs`` ``[N,C,H,W]`` with the explanation
    ``methods`` (at least two; registered ids or the ``random`` / ``sobel`` baselines),
    ``perturbations`` repeats of each of the paper's tests (:data:`TESTS`, or ``tests``:
    ``{name: (space, "minor" | "disruptive", size)}``). Returns the IAC / IEC / MC scores
    with 95 % bootstrap intervals (``resamples`` resamples of the images, ``seed``); the
    perturbations are drawn from ``seed`` too. The model is left as it was."""
    from ..attribution import get as get_method
    from ..attribution.base import check_inputs
    from ..placement import model_device
    from .evaluate import BASELINE_METHODS, _method_fn, check_method_params, with_memory

    entry = metric if isinstance(metric, registry.Metric) else registry.get(metric)
    settings = dict(metric_params or {})
    if not isinstance(metric, registry.Metric):
        from ..params import check_params

        settings = check_params(entry.name, settings, entry.params)
    methods = list(dict.fromkeys(methods))
    if len(methods) < 2:
        raise InputError(
            f"a meta-evaluation ranks methods: give at least two (got {methods}); "
            "the random and sobel baselines count"
        )
    if perturbations < 1 or resamples < 2:
        raise InputError(f"perturbations must be >= 1 and resamples >= 2, got "
                         f"{perturbations}, {resamples}")  # fmt: skip
    tests = dict(TESTS if tests is None else tests)
    for name, (space, kind, size) in tests.items():
        if space not in ("model", "input") or kind not in ("minor", "disruptive") or size <= 0:
            raise InputError(f"test {name!r}: space model|input, kind minor|disruptive, "
                             f"size > 0 (got {space!r}, {kind!r}, {size!r})")  # fmt: skip
    if "ground-truth" in entry.needs and boxes is None and masks is None:
        raise InputError(f"metric {entry.name!r} needs object boxes or masks; give boxes= or "
                         "masks=")  # fmt: skip
    params = check_method_params(method_params or {}, methods, model)
    complete = {m: m not in BASELINE_METHODS and get_method(m).complete for m in methods}
    if "complete-method" in entry.needs and not all(complete.values()):
        raise InputError(f"metric {entry.name!r} scores complete methods only; "
                         f"{', '.join(m for m in methods if not complete[m])} are not")  # fmt: skip
    x = check_inputs(inputs, model).to(model_device(model))
    masks = None if masks is None else masks.to(x.device)
    fns = {m: _method_fn(m, with_memory(m, params.get(m, {}), memory), seed) for m in methods}

    def scores(net: nn.Module, xs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``[L, N]``: every method's explanation of ``xs`` by ``net``, scored."""
        rows = []
        for m in methods:
            expl = fns[m](net, xs, target)
            maps = expl.maps if hasattr(expl, "maps") else expl
            job = registry.Scoring(
                net, xs, maps, expl, target, m, fns[m], boxes=boxes, masks=masks,
                sanity_rows=xs.shape[0], batch_size=batch_size, memory=memory, seed=seed,
                complete=complete[m],
            )  # fmt: skip
            rows.append(entry.score(job, **settings)["values"].detach().double().cpu())
        return torch.stack(rows)

    def top1(net: nn.Module, xs: torch.Tensor) -> torch.Tensor:
        with frozen(net), torch.no_grad():
            return net(xs).argmax(1)

    with frozen(model):
        target = top1(model, x)
        q = scores(model, x, target)  # [L, N]
        q_hat, keep = {}, {}
        for t, (name, (space, kind, size)) in enumerate(tests.items()):
            per, kept = [], []
            for k in range(perturbations):
                s = seed * 1_000_003 + 1000 * t + k
                if space == "model":
                    net, xs = _perturbed_model(model, size, s), x
                else:
                    net, xs = model, _perturbed_inputs(x, size, s)
                same = (top1(net, xs) == target).cpu()
                kept.append(same if kind == "minor" else ~same)
                per.append(scores(net, xs, target))
            q_hat[name], keep[name] = torch.stack(per), torch.stack(kept)  # [K,L,N], [K,N]
    lower = entry.lower_is_better
    n = x.shape[0]
    gen = seeded_generator(seed)
    draws = torch.cat([torch.arange(n)[None], torch.randint(n, (resamples, n), generator=gen)])

    def criteria(name: str, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(IAC, IEC) of one test, for the sample (entry 0) and each resample: ``[B+1]``."""
        kp = keep[name]  # [K, n]
        valid = kp[:, None] & ~(torch.isnan(q)[None] | torch.isnan(q_hat[name]))  # [K, L, n]
        p = wilcoxon_p((q[None] - q_hat[name]).reshape(-1, n), valid.reshape(-1, n))
        p = p if kind == "minor" else 1 - p  # [K*L]
        cells = torch.randint(p.numel(), (resamples, p.numel()), generator=gen)
        iac = torch.cat([torch.nanmean(p)[None], torch.nanmean(p[cells], 1)])
        qs = q[:, draws]  # [L, B+1, n]
        qh = q_hat[name][:, :, draws]  # [K, L, B+1, n]
        ok = kp[:, draws] & ~(torch.isnan(qs)[None] | torch.isnan(qh)).any(1)  # [K, B+1, n]
        if kind == "minor":  # the methods' order by score, position by position
            before = torch.sort(qs, dim=0, stable=True).indices  # [L, B+1, n]
            after = torch.sort(qh, dim=1, stable=True).indices  # [K, L, B+1, n]
            u = (before[None] == after).double().mean(1)  # [K, B+1, n]
        else:  # the unperturbed score strictly better than the perturbed one
            u = (qs[None] < qh if lower else qs[None] > qh).double().mean(1)
        per_k = (u * ok).sum(-1) / ok.sum(-1)  # NaN where a repeat kept no image
        return iac, torch.nanmean(per_k, 0)

    out: dict[str, dict[str, list[torch.Tensor]]] = {}
    for name, (space, kind, _size) in tests.items():
        iac, iec = criteria(name, kind)
        tag = "NR" if kind == "minor" else "AR"
        part = out.setdefault(space, {})
        part.setdefault(f"IAC_{tag}", []).append(iac)
        part.setdefault(f"IEC_{tag}", []).append(iec)
    result: dict[str, dict[str, tuple[float, float, float]]] = {}
    for space, part in out.items():
        series = {c: torch.nanmean(torch.stack(v), 0) for c, v in part.items()}
        if len(series) == 4:
            series["MC"] = torch.stack(list(series.values())).mean(0)
        result[space] = {}
        for c in CRITERIA:
            if c not in series:
                continue
            v = series[c]
            reps = v[1:]
            lo, hi = (torch.nanquantile(reps, 0.025), torch.nanquantile(reps, 0.975))
            result[space][c] = (float(v[0]), float(lo), float(hi))
    return MetaEvaluation(
        metric=entry.name, methods=methods, images=n, scores=result,
        kept={name: float(k.double().mean()) for name, k in keep.items()},
        settings={"perturbations": perturbations, "resamples": resamples, "seed": seed,
                  "tests": {k: list(v) for k, v in tests.items()}},
    )  # fmt: skip

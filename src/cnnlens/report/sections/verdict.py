"""Report section "Verdict": which explanation methods to trust on this model, and why.

Judges the evaluation of the "Faithfulness and localisation" section (the same images,
methods and metrics, computed once per report: :func:`.faithfulness.faithfulness_evaluation`)
with :func:`cnnlens.metrics.verdict.verdict`: every cell with a 95 % bootstrap interval,
each method against the random and Sobel baselines per metric family, Kendall's tau between
the metrics' rankings, and the meta-evaluation of the metrics themselves (MetaQuantus,
Hedström et al. 2023) for deletion (and the pointing game where the data has masks) on the
same images and methods: each test repeated once in a quick report, twice otherwise.
"""

from __future__ import annotations

import html
import math

from .. import ReportContext, section


def _table(v) -> str:
    head = "".join(f"<th>{html.escape(m).replace('-', '-<wbr>')}</th>" for m in v.metrics)
    body = ""
    for method in v.methods:
        tds = ""
        for metric in v.metrics:
            cell = v.cells[(method, metric)]
            outcome = v.outcomes.get((method, metric), "")
            mark = {"beats": " ✓", "loses": " ✗"}.get(outcome, "")
            text = "–" if math.isnan(cell.mean) else (
                f"{cell.mean:.3f}<br><small>[{cell.low:.3f}, {cell.high:.3f}]</small>{mark}"
            )  # fmt: skip
            tds += f"<td>{text}</td>"
        body += f"<tr><td>{html.escape(method)}</td>{tds}</tr>"
    return f"<table><tr><th>method</th>{head}</tr>{body}</table>"


def _tau(v) -> str:
    head = "".join(f"<th>{html.escape(m).replace('-', '-<wbr>')}</th>" for m in v.metrics)
    body = ""
    for name, row in zip(v.metrics, v.tau, strict=True):
        tds = "".join("<td>–</td>" if math.isnan(t) else f"<td>{t:+.2f}</td>" for t in row)
        body += f"<tr><td>{html.escape(name)}</td>{tds}</tr>"
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _bold(text: str) -> str:
    """The recommendation's ``**family**`` as HTML."""
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def _meta(ctx: ReportContext, ev, n: int) -> list:
    """The meta-evaluations of the section's cheap metrics, on its images and methods."""
    from ...metrics.meta import meta_evaluate
    from .faithfulness import curve_step

    x, _ = ctx.test.tensors(range(n))
    masks = None if ctx.test.masks is None else ctx.test.masks[:n]
    names = ["deletion"] + (["pointing-game"] if masks is not None else [])
    settings = {"deletion": {"step": curve_step(ctx.test.image_shape)}, "pointing-game": {}}
    repeats = 1 if ctx.options.get("quick") else 2
    return [
        meta_evaluate(ctx.model, x, name, ev.params["methods"], masks=masks,
                      metric_params=settings[name], perturbations=repeats, resamples=200)
        for name in names
    ]  # fmt: skip


@section("verdict", "Verdict: which explanation to trust", order=61)
def verdict_section(ctx: ReportContext) -> str | None:
    from ...metrics.verdict import verdict
    from .faithfulness import faithfulness_evaluation

    ev, chosen, n, _step = faithfulness_evaluation(ctx)
    if not chosen:
        return None
    v = verdict(ev, seed=int(ctx.options.get("seed", 0)))
    v.meta = _meta(ctx, ev, n)
    items = "".join(f"<li>{_bold(line)}</li>" for line in v.lines())
    pairs = v.disagreements()
    disagree = (
        "<p>Metrics that rank the methods in opposite ways: "
        + "; ".join(f"{html.escape(a)} vs {html.escape(b)} (tau {t:+.2f})" for a, b, t in pairs)
        + ".</p>"
        if pairs
        else ""
    )
    meta = ""
    if v.meta:
        meta = (
            "<p>Can the metrics themselves be trusted on this model? Their meta-evaluation "
            "(MetaQuantus, Hedström et al. 2023): resilience (NR) to minor perturbations that "
            "should not change a metric (parameters times N(1, 0.001²), inputs plus "
            "U(±0.001)), reactivity (AR) to disruptive ones that should (N(1, 2²), U(±5)); IAC "
            "compares the scores' distributions (Wilcoxon p), IEC the methods' rankings; MC is "
            "their mean; 1 is best, with 95 % bootstrap intervals.</p>"
            + "".join(m.html() for m in v.meta)
        )
    return (
        f"<p>Which methods beat both baselines (<code>random</code> maps and <code>sobel</code> "
        f"image edges) on this model, by metric family? The numbers of the faithfulness "
        f"section ({n} images); each interval is a 95 % percentile bootstrap over the images "
        f"({v.settings['resamples']} resamples, seed {v.settings['seed']}); a method beats a "
        "baseline when the two intervals do not overlap. There is no combined score: trust a "
        f"method for the families where it beats both.</p><ul>{items}</ul>{_table(v)}"
        "<p class='note'>✓ beats both baselines; ✗ loses to one; no mark: ties (or a "
        "baseline).</p><p>Rank agreement between the metrics: Kendall's tau-b between the "
        f"rankings of the methods each metric gives (+1 same order, -1 reversed).</p>{_tau(v)}"
        + disagree
        + meta
    )

"""Report section "Faithfulness and localisation": a small method x metric table.

Kept cheap for the demo (8 test images, ``options["faithfulness_images"]``; two fast methods;
deletion/insertion in 16 steps of H*W/16 pixels, at least 64, so 64-pixel steps at 32x32 and
the same 16 forwards per curve at 224x224; 11 degradation fractions, sanity check on 4
images): the full protocol of the papers is ``cnnlens evaluate``.
"""

from __future__ import annotations

import html

from .. import ReportContext, section
from ..figures import figure_html

FAST_METHODS = ("saliency", "grad-cam")
IMAGES = 8
CURVE_STEPS = 16  # deletion / insertion steps per curve, whatever the image size
MIN_STEP = 64


def curve_step(shape) -> int:
    """Pixels removed per deletion / insertion step for ``(C, H, W)`` images."""
    return max(MIN_STEP, shape[-2] * shape[-1] // CURVE_STEPS)


def faithfulness_evaluation(ctx: ReportContext):
    """The section's evaluation of the report's model (its methods, the baselines, its
    metrics on its images), computed once per report and kept in ``ctx.cache``: the
    verdict section judges the same numbers. Returns ``(evaluation, methods, images, step)``."""
    if "faithfulness_evaluation" in ctx.cache:
        return ctx.cache["faithfulness_evaluation"]
    from ... import metrics as registry
    from ...attribution import methods as registered
    from ...metrics.evaluate import evaluate

    known = registered()
    chosen = [m for m in FAST_METHODS if m in known]
    n = min(int(ctx.options.get("faithfulness_images", IMAGES)), len(ctx.test))
    step = curve_step(ctx.test.image_shape)
    quick_metrics = {
        "deletion": {"step": step},
        "insertion": {"step": step},
        "degradation-small": {"fractions": 11},
    }
    x, _ = ctx.test.tensors(range(n))
    boxes = None if ctx.test.boxes is None else ctx.test.boxes[:n]
    masks = None if ctx.test.masks is None else ctx.test.masks[:n]
    metrics = ["deletion", "insertion", "degradation-small"]
    if boxes is not None or masks is not None:  # every localisation metric of the table
        table = registry.names(optional=False)
        metrics += [m for m in table if "ground-truth" in registry.get(m).needs]
    metrics.append("randomisation")
    ev = evaluate(
        ctx.model,
        x,
        methods=chosen,
        metrics=metrics,
        boxes=boxes,
        masks=masks,
        metric_params={k: v for k, v in quick_metrics.items() if k in metrics},
        chunk=n,
        sanity_images=min(4, n),
        progress=False,
    )
    ctx.cache["faithfulness_evaluation"] = (ev, chosen, n, step)
    return ctx.cache["faithfulness_evaluation"]


@section("faithfulness", "Faithfulness and localisation", order=60)
def faithfulness(ctx: ReportContext) -> str | None:
    from ... import metrics as registry
    from ...metrics.outputs import curve_figure

    ev, chosen, n, step = faithfulness_evaluation(ctx)
    methods, names, cells = ev.table()
    # metric names may break after "-", so the table fits the page's column
    head = "".join(f"<th>{html.escape(m).replace('-', '-<wbr>')}</th>" for m in names)
    body = ""
    for method in methods:
        tds = ""
        for metric in names:
            mean, half = cells.get((method, metric), (float("nan"), 0.0))
            tds += "<td>–</td>" if mean != mean else f"<td>{mean:.3f} ±&nbsp;{half:.3f}</td>"
        fails = ev.sanity_fails.get(method)
        verdict = "–" if fails is None else ("<b>fails</b>" if fails else "passes")
        body += f"<tr><td>{html.escape(method)}</td>{tds}<td>{verdict}</td></tr>"
    table = f"<table><tr><th>method</th>{head}<th>sanity check</th></tr>{body}</table>"
    legend = "".join(
        f"<li><code>{html.escape(k)}</code>: {html.escape(registry.get(k).description)}</li>"
        for k in names
        if k in registry.names()
    )
    figs = ""
    for name in ("deletion", "insertion"):
        fig = curve_figure(ev, name)
        if fig is not None:
            figs += figure_html(fig, f"mean {name} curves")
    listed = ", ".join(chosen) if chosen else "no attribution method is registered yet"
    return (
        f"<p>How well do the explanations follow the model and the objects? {n} test images; "
        f"methods: {html.escape(listed)}, next to two baselines, <code>random</code> maps and "
        "<code>sobel</code> image edges. Each cell is the mean ± 95 % confidence half width. "
        f"For speed this section uses coarser steps ({step}-pixel deletion/insertion steps, 11 "
        "degradation fractions, sanity check on 4 images); <code>cnnlens evaluate</code> runs "
        f"the papers' full protocol.</p>{table}<ul class='note'>{legend}"
        "<li><code>randomisation-final</code>: Spearman after randomising every layer; a method "
        "fails the sanity check when it stays >= 0.5</li></ul>" + figs
    )

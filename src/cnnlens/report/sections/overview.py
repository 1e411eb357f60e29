"""Report section "Model and data": architecture, cost, data set and a sample."""

from __future__ import annotations

import html

from .. import ReportContext, section, table_html
from ..figures import figure_html, image_grid


@section("overview", "Model and data", order=10)
def overview(ctx: ReportContext) -> str:
    from ...cost import macs

    model = ctx.model
    arch = getattr(model, "arch", {"name": type(model).__name__, "kwargs": {}})
    shape = tuple(ctx.test.image_shape)
    cost = macs(model, shape)
    params = sum(p.numel() for p in model.parameters())
    facts = [
        {"": "architecture", "value": arch["name"]},
        {"": "arguments", "value": ", ".join(f"{k}={v}" for k, v in arch["kwargs"].items())},
        {"": "parameters", "value": f"{params:,}"},
        {"": "MACs per image", "value": f"{cost.total / 1e6:.2f} M"},
        {"": "data set", "value": ctx.test.name},
        {"": "classes", "value": ", ".join(ctx.test.classes)},
        {"": "input", "value": "x".join(str(s) for s in shape)},
        {"": "test images", "value": f"{len(ctx.test):,}"},
    ]
    if ctx.train is not None:
        facts.append({"": "training images", "value": f"{len(ctx.train):,}"})
    n = min(16, len(ctx.test))
    images = ctx.test.raw_batch(range(n))
    titles = [ctx.test.classes[int(c)] for c in ctx.test.labels[:n]]
    boxes = ctx.test.boxes[:n] if ctx.test.boxes is not None else None
    grid = figure_html(image_grid(images, titles, boxes=boxes), "sample test images")
    note = (
        "<p class='note'>Yellow rectangles are the ground-truth boxes.</p>"
        if boxes is not None
        else ""
    )
    return (
        table_html(facts)
        + f"<h3>Sample of the test split ({html.escape(ctx.test.name)})</h3>"
        + grid
        + note
    )

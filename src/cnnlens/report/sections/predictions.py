"""Report section "Predictions": test images with true and predicted labels."""

from __future__ import annotations

from .. import ReportContext, section
from ..figures import figure_html, image_grid


@section("predictions", "Predictions on test images", order=30)
def predictions(ctx: ReportContext) -> str:
    n = min(32, len(ctx.test))
    logits = ctx.logits()[:n]
    probs = logits.softmax(1)
    pred = probs.argmax(1)
    labels = ctx.test.labels[:n]
    classes = ctx.test.classes
    titles = [
        f"true {classes[int(t)]}\npred {classes[int(p)]} {float(probs[i, p]):.2f}"
        for i, (t, p) in enumerate(zip(labels, pred, strict=True))
    ]
    colors = ["green" if int(t) == int(p) else "red" for t, p in zip(labels, pred, strict=True)]
    boxes = ctx.test.boxes[:n] if ctx.test.boxes is not None else None
    # Misclassified images first: they are the interesting ones.
    order = sorted(range(n), key=lambda i: colors[i] == "green")
    fig = image_grid(
        ctx.test.raw_batch(order),
        [titles[i] for i in order],
        boxes=boxes[order] if boxes is not None else None,
        title_colors=[colors[i] for i in order],
    )
    wrong = colors.count("red")
    return (
        f"<p>The first {n} test images, misclassified first ({wrong} of {n} wrong); "
        "green titles are correct, red wrong; the number is the predicted class's "
        "probability.</p>" + figure_html(fig, "test predictions")
    )

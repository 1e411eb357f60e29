"""Report section "Training": curves, test accuracy and the confusion matrix."""

from __future__ import annotations

import numpy as np

from .. import ReportContext, section, table_html
from ..figures import confusion_plot, figure_html, line_plot


@section("training", "Training and test accuracy", order=20)
def training(ctx: ReportContext) -> str:
    parts = []
    hist = ctx.history
    if hist:
        loss = {"train": [h["train_loss"] for h in hist]}
        acc = {"train": [h["train_accuracy"] for h in hist]}
        if "val_loss" in hist[0]:
            loss["validation"] = [h["val_loss"] for h in hist]
            acc["validation"] = [h["val_accuracy"] for h in hist]
        parts.append(figure_html(line_plot(loss, xlabel="epoch", ylabel="loss"), "loss curves"))
        parts.append(
            figure_html(line_plot(acc, xlabel="epoch", ylabel="accuracy"), "accuracy curves")
        )
        seconds = sum(h.get("seconds", 0.0) for h in hist)
        parts.append(f"<p>{len(hist)} epochs, {seconds:.0f} s of training.</p>")
    logits = ctx.logits()
    labels = ctx.test.labels
    pred = logits.argmax(1)
    k = len(ctx.test.classes)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels.numpy(), pred.numpy()), 1)
    accuracy = float((pred == labels).float().mean())
    rows = [
        {
            "class": c,
            "images": int(matrix[i].sum()),
            "recall": float(matrix[i, i] / max(matrix[i].sum(), 1)),
            "precision": float(matrix[i, i] / max(matrix[:, i].sum(), 1)),
        }
        for i, c in enumerate(ctx.test.classes)
    ]
    ctx.cache["test_accuracy"] = accuracy
    parts.append(f"<p><b>Test accuracy: {100 * accuracy:.2f} %</b> on {len(labels)} images.</p>")
    parts.append(figure_html(confusion_plot(matrix, ctx.test.classes), "confusion matrix"))
    parts.append(table_html(rows, floatfmt="{:.3f}"))
    return "".join(parts)

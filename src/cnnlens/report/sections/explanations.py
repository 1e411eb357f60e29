"""Report section "Explanations": test images x attribution methods.

Every registered method (``cnnlens.methods()``, so methods added later show
up on their own) runs on the first 8 test images with its default
hyperparameters and the predicted class as target. A method is first timed
on one image; methods whose estimate would push the section past its time
budget (about 30 s on 2 cores) are listed as skipped, with the estimate,
instead of run. A method that fails shows its error in the table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from .. import ReportContext, section, table_html
from ..figures import _as_hwc, figure_html, plt

BUDGET_S = 30.0
QUICK_BUDGET_S = 8.0  # the quick demo (options["quick"])
IMAGES = 8


def explanation_grid(
    images: torch.Tensor,
    columns: dict[str, torch.Tensor],
    row_titles: Sequence[str],
    *,
    cell: float = 1.25,
):
    """Figure: one row per image, first the image, then each method's map over it.

    ``columns`` maps a method name to its maps ``[N,1,H,W]`` (any scale; each
    is min-max normalised per image).
    """
    n, m = len(images), len(columns)
    fig, axes = plt.subplots(n, m + 1, figsize=((m + 1) * cell, n * (cell + 0.1)), squeeze=False)
    for i in range(n):
        base = _as_hwc(images[i])
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            ax.imshow(base, cmap="gray", interpolation="nearest")
            if j == 0:
                ax.set_title(row_titles[i], fontsize=6)
                continue
            name = list(columns)[j - 1]
            heat = columns[name][i, 0].detach().float().cpu()
            lo, hi = heat.min(), heat.max()
            heat = ((heat - lo) / (hi - lo).clamp_min(1e-12)).numpy()
            ax.imshow(heat, cmap="jet", alpha=0.55, interpolation="bilinear")
            if i == 0:
                ax.set_title(name, fontsize=6)
    fig.tight_layout(pad=0.2)
    return fig


# Model passes per image at default settings (forward+backward = 1) for the
# methods whose cost is known; others are timed on one image first.
KNOWN_PASSES = {
    "saliency": 1, "input-x-gradient": 1, "guided-backprop": 1, "deconvnet": 1,
    "grad-cam": 1, "grad-cam++": 1, "layer-cam": 1, "cam": 1, "deeplift": 1.5,
    "guided-grad-cam": 1, "lrp": 1.6, "integrated-gradients": 51, "smoothgrad": 51,
    "score-cam": 30,
}  # fmt: skip


def _order(names: list[str]) -> list[str]:
    """Known-cost methods first (cheapest first), then the others by name."""
    return sorted(names, key=lambda n: (n not in KNOWN_PASSES, KNOWN_PASSES.get(n, 0), n))


@section("explanations", "Explanations", order=40)
def explanations(ctx: ReportContext) -> str:
    """Options: ``explain_budget_s`` (default 30, 8 when ``quick``), ``explain_methods``."""
    from ...attribution import explain, methods

    n = min(IMAGES, len(ctx.test))
    device = next(ctx.model.parameters()).device
    x, _labels = ctx.test.tensors(range(n))
    x = x.to(device)
    logits = ctx.logits()[:n]
    probs = logits.softmax(1)
    pred = probs.argmax(1).to(device)
    classes = ctx.test.classes
    default_budget = QUICK_BUDGET_S if ctx.options.get("quick") else BUDGET_S
    budget = float(ctx.options.get("explain_budget_s", default_budget))
    registered = methods()
    wanted = ctx.options.get("explain_methods") or list(registered)
    extra: dict[str, dict] = {}
    if "iba" in wanted:  # layer statistics from training images, estimated once
        from ...workflows import iba_statistics

        source = ctx.train if ctx.train is not None else ctx.test
        try:
            extra["iba"] = {"statistics": iba_statistics(ctx.model, source, images=256)[0]}
        except Exception:  # noqa: BLE001 - IBA's own row then says what is wrong
            pass
    start = time.perf_counter()
    pass_cost: float | None = None  # seconds per image of one forward+backward
    maps: dict[str, torch.Tensor] = {}
    rows = []

    def row(name: str, status: str, per_image: str = "") -> None:
        rows.append(
            {"method": name, "status": status, "s/image": per_image,
             "what": registered.get(name, "")}
        )  # fmt: skip

    for name in _order([w for w in wanted if w in registered]):
        left = budget - (time.perf_counter() - start)
        try:
            if name in KNOWN_PASSES and pass_cost is not None:
                estimate = KNOWN_PASSES[name] * pass_cost * n
            elif name in KNOWN_PASSES:
                estimate = 0.0  # the first (cheapest) method measures the pass cost
            elif left < 0.25 * budget:
                row(name, "skipped (time budget of the section used up)")
                continue
            else:
                t0 = time.perf_counter()
                explain(ctx.model, x[:1], name, target=pred[:1], **extra.get(name, {}))
                estimate = (time.perf_counter() - t0) * n
                left = budget - (time.perf_counter() - start)
            if estimate > left:
                row(name, f"skipped (estimated {estimate:.1f} s for {n} images)")
                continue
            t0 = time.perf_counter()
            e = explain(ctx.model, x, name, target=pred, **extra.get(name, {}))
            took = time.perf_counter() - t0
            if pass_cost is None and name in KNOWN_PASSES:
                pass_cost = took / n / KNOWN_PASSES[name]
            maps[name] = e.maps.cpu()
            row(name, "shown", f"{took / n:.4f}")
        except Exception as exc:  # one failing method must not lose the section
            row(name, f"failed: {type(exc).__name__}: {exc}"[:200])
    rows.sort(key=lambda r: r["method"])
    titles = [f"{classes[int(p)]} {float(probs[i, p]):.2f}" for i, p in enumerate(pred)]
    parts = [
        f"<p>The first {n} test images (rows) explained by every registered attribution "
        "method that fits the section's time budget (columns), for the predicted class; "
        "the row title is that class and its probability. Each map is scaled to its own "
        f"range per image (red = most relevant). Section time "
        f"{time.perf_counter() - start:.1f} s.</p>"
    ]
    if maps:
        fig = explanation_grid(ctx.test.raw_batch(range(n)), maps, titles)
        parts.append(figure_html(fig, "attribution maps"))
    parts.append(table_html(rows))
    return "".join(parts)

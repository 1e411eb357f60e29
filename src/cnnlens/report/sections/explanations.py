"""Report section "Explanations": test images x attribution methods.

Every registered method (``cnnlens.methods()``, so methods added later show
up on their own) runs on the first 8 test images (``options["explain_images"]``) with its default
hyperparameters and the predicted class as target. A method is first timed
on one image; methods whose estimate would push the section past its time
budget (about 30 s on 2 cores) are listed as skipped, with the estimate,
instead of run. A method that fails shows its error in the table.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

import torch

from ...placement import model_device
from ...plotting import as_hwc
from .. import ReportContext, section, table_html
from ..figures import CellGrid, figure_html, title_px

BUDGET_S = 30.0
QUICK_BUDGET_S = 8.0  # the quick demo (options["quick"])
IMAGES = 8


LABEL_PX = 170  # room for a method name beside its row ("meaningful-perturbation")


def explanation_grid(
    images: torch.Tensor,
    maps: dict[str, torch.Tensor],
    titles: Sequence[str],
):
    """Figure: the images (columns, titled) on top, then one row of maps per method.

    ``maps`` maps a method name to its maps ``[N,1,H,W]`` (any scale; each is
    min-max normalised per image) and is drawn over the image; the method's
    name is written beside its row. Cells follow the report's figure rule.
    """
    n = len(images)
    names = list(maps)
    grid = CellGrid(
        len(names) + 1, n, left_px=LABEL_PX, title_px=[title_px(titles)] + [0] * len(names)
    )
    for i in range(n):
        base = as_hwc(images[i])
        grid.image(0, i, base, cmap="gray", interpolation="nearest")
        grid.title(0, i, titles[i])
        for r, name in enumerate(names, start=1):
            heat = maps[name][i, 0].detach().float().cpu()
            lo, hi = heat.min(), heat.max()
            heat = ((heat - lo) / (hi - lo).clamp_min(1e-12)).numpy()
            grid.image(r, i, base, cmap="gray", interpolation="nearest")
            grid.image(r, i, heat, cmap="jet", alpha=0.55, interpolation="bilinear")
    for r, name in enumerate(["image", *names]):
        grid.label(r, name)
    return grid.fig


def family(name: str) -> str:
    """The heading a registered method is shown under (its ``family``)."""
    from ...attribution import get
    from ...attribution.base import FAMILIES

    fam = get(name).family
    return FAMILIES.get(fam, fam)


def family_grids(images: torch.Tensor, maps: dict[str, torch.Tensor], titles: Sequence[str]) -> str:
    """HTML: one heading and one :func:`explanation_grid` per method family shown."""
    from ...attribution.base import FAMILIES

    groups: dict[str, dict[str, torch.Tensor]] = {f: {} for f in FAMILIES.values()}
    for name in sorted(maps):
        groups.setdefault(family(name), {})[name] = maps[name]
    parts = []
    for f, group in groups.items():
        if not group:
            continue
        parts.append(f"<h3>{html.escape(f)}</h3>")
        for start in range(0, len(images), IMAGES):  # at most IMAGES columns: fits the page
            part = slice(start, start + IMAGES)
            grid = explanation_grid(
                images[part], {k: v[part] for k, v in group.items()}, titles[part]
            )
            parts.append(figure_html(grid, f"{f} attribution maps"))
    return "".join(parts)


def known_passes(name: str) -> float | None:
    """Model passes per image at default settings (forward+backward = 1), when the
    method knows them (its ``passes``); others are timed on one image first."""
    from ...attribution import get

    return get(name).cost()


def _order(names: list[str]) -> list[str]:
    """Known-cost methods first (cheapest first), then the others by name."""
    cost = {n: known_passes(n) for n in names}
    return sorted(names, key=lambda n: (cost[n] is None, cost[n] or 0, n))


PREPARE_IMAGES = 256  # training images a method's preparation may use here


def _prepare(ctx: ReportContext, names: list[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """Each method's ``prepare`` (IBA's statistics from training images, a VAE given in
    the options, ...): ``({name: extra parameters}, {name: why it cannot run})``."""
    from ...attribution import Setup, get
    from ...errors import CnnlensError, first_line

    source = ctx.train if ctx.train is not None else ctx.test
    setup = Setup(ctx.model, train=lambda: source, images=PREPARE_IMAGES)
    extra, unprepared = {}, {}
    for name in names:
        method = get(name)
        if not method.needs:
            continue
        given = {k: ctx.options[k] for k in method.accepted() if ctx.options.get(k) is not None}
        try:
            extra[name] = {**given, **method.prepare(setup, given)}
        except CnnlensError as exc:
            unprepared[name] = f"{method.needs}: {first_line(exc)}"
    return extra, unprepared


@section("explanations", "Explanations", order=40)
def explanations(ctx: ReportContext) -> str:
    """Options: ``explain_budget_s`` (default 30, 8 when ``quick``), ``explain_methods``,
    and parts a method needs under its parameter's name (``vae``: the run's VAE); a
    method whose ``prepare`` cannot build what it needs is listed as skipped.
    ``explain_images``: images shown (default 8; 8 to a figure)."""
    from ...attribution import explain, methods

    n = min(int(ctx.options.get("explain_images", IMAGES)), len(ctx.test))
    device = model_device(ctx.model)
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
    extra, unprepared = _prepare(ctx, [w for w in wanted if w in registered])
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
        if name in unprepared:
            row(name, f"skipped (needs {unprepared[name]})"[:200])
            continue
        passes = known_passes(name)
        try:
            if passes is not None and pass_cost is not None:
                estimate = passes * pass_cost * n
            elif passes is not None:
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
            if pass_cost is None and passes is not None:
                pass_cost = took / n / passes
            maps[name] = e.maps.cpu()
            row(name, "shown", f"{took / n:.4f}")
        except Exception as exc:  # one failing method must not lose the section
            row(name, f"failed: {type(exc).__name__}: {exc}"[:200])
    rows.sort(key=lambda r: r["method"])
    titles = [f"{classes[int(p)]} {float(probs[i, p]):.2f}" for i, p in enumerate(pred)]
    parts = [
        f"<p>The first {n} test images (columns) explained by every registered attribution "
        "method that fits the section's time budget (rows, one figure per family), for the "
        "predicted class; the image's title is that class and its probability. Each map is "
        f"scaled to its own range per image (red = most relevant). Section time "
        f"{time.perf_counter() - start:.1f} s.</p>"
    ]
    if maps:
        parts.append(family_grids(ctx.test.raw_batch(range(n)), maps, titles))
    parts.append(table_html(rows))
    return "".join(parts)

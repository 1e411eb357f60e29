"""Files of an evaluation: ``metrics.csv``, ``summary.md``, ``summary.json`` and curve plots."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from ..io import write_bytes, write_json, write_text
from . import registry
from .evaluate import Evaluation


def curves() -> dict[str, tuple[str, str]]:
    """``{curve name: (title, x label)}`` of the plotted curves (the metrics' entries)."""
    return registry.plotted_curves()


def mean_curves(ev: Evaluation, name: str) -> dict[str, torch.Tensor]:
    """Mean curve per method for curve ``name`` (methods without it are left out)."""
    out = {}
    for method, curves in ev.curves.items():
        if name in curves:
            out[method] = torch.nanmean(curves[name].double(), 0)
    return out


def curve_figure(ev: Evaluation, name: str):
    """Mean ``name`` curve of every method on one matplotlib figure (None without data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = mean_curves(ev, name)
    if not series:
        return None
    title, xlabel = curves().get(name, (name, "step"))
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for method, y in series.items():
        x = torch.linspace(0, 1, y.numel())
        style = "--" if method in ("random", "sobel") else "-"
        ax.plot(x.numpy(), y.numpy(), style, label=method, linewidth=1.3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("target probability")
    ax.set_title(f"mean {title} curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, ncol=2)
    fig.tight_layout()
    return fig


def csv_text(ev: Evaluation) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["image", "method", "metric", "value"], lineterminator="\n")
    w.writeheader()
    for row in ev.rows():
        v = row["value"]
        w.writerow({**row, "value": "" if math.isnan(v) else f"{v:.6g}"})
    return buf.getvalue()


def summary_markdown(ev: Evaluation, *, title: str = "Explanation metrics") -> str:
    n = len(ev.images)
    lines = [
        f"# {title}",
        "",
        f"{n} images; every cell is the mean over images ± the half width of its 95 % "
        "confidence interval (1.96 standard errors). ↑ higher is better, ↓ lower is better. "
        "`random` and `sobel` are baseline maps (uniform noise, image edges): a method that does "
        "not beat them explains nothing the metric can see. The sanity column is the "
        "model-randomisation check (Adebayo et al. 2018): FAILS when the maps keep a Spearman "
        "correlation >= 0.5 with the original after the whole cascade.",
        "",
        ev.markdown(),
        "",
        "Metrics:",
        "",
    ]
    for name in registry.names(optional=False):
        lines.append(f"- `{name}`: {registry.describe(name)}")
        entry = registry.get(name)
        lines += [f"- `{k}`: {v}" for k, v in entry.also.items()]
    return "\n".join(lines) + "\n"


def write_evaluation(ev: Evaluation, out: str | Path) -> dict[str, Path]:
    """Write ``metrics.csv``, ``summary.md``, ``summary.json`` and ``curves_<name>.png``."""
    from ..plotting import to_png

    out = Path(out)
    files = {
        "csv": write_text(out / "metrics.csv", csv_text(ev)),
        "summary": write_text(out / "summary.md", summary_markdown(ev)),
        "json": write_json(
            out / "summary.json",
            {
                "images": len(ev.images),
                "summary": [
                    {
                        k: (None if isinstance(v, float) and math.isnan(v) else v)
                        for k, v in r.items()
                    }
                    for r in ev.summary()
                ],
                "sanity_fails": ev.sanity_fails,
            },
        ),
    }
    for name in curves():
        fig = curve_figure(ev, name)
        if fig is not None:
            files[name] = write_bytes(out / f"curves_{name}.png", to_png(fig))
    return files

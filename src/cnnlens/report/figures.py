"""Figures for reports, rendered with matplotlib (Agg) to embeddable PNG data."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(fig, alt: str) -> str:
    """An ``<img>`` tag with the figure embedded (reports stay self-contained)."""
    return f'<img alt="{alt}" src="{data_uri(to_png(fig))}">'


def _as_hwc(image: torch.Tensor) -> np.ndarray:
    arr = image.detach().cpu().float().clamp(0, 1)
    arr = arr.permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def image_grid(
    images: torch.Tensor,
    titles: Sequence[str] | None = None,
    *,
    boxes: torch.Tensor | None = None,
    title_colors: Sequence[str] | None = None,
    columns: int = 8,
    cell: float = 1.6,
):
    """A grid of ``[N,C,H,W]`` images in [0,1] with optional titles and boxes."""
    n = len(images)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * cell, rows * (cell + 0.25)))
    axes = np.atleast_1d(axes).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(_as_hwc(images[i]), cmap="gray", interpolation="nearest")
        if boxes is not None:
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
            ax.add_patch(
                plt.Rectangle(
                    (x0 - 0.5, y0 - 0.5),
                    x1 - x0 + 1,
                    y1 - y0 + 1,
                    fill=False,
                    edgecolor="yellow",
                    linewidth=1.2,
                )
            )
        if titles is not None:
            color = title_colors[i] if title_colors is not None else "black"
            ax.set_title(titles[i], fontsize=7, color=color)
    fig.tight_layout()
    return fig


def line_plot(series: dict[str, Sequence[float]], *, xlabel: str, ylabel: str, title: str = ""):
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, ys in series.items():
        ax.plot(range(1, len(ys) + 1), ys, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_plot(matrix: np.ndarray, classes: Sequence[str]):
    fig, ax = plt.subplots(figsize=(0.5 * len(classes) + 2.5, 0.5 * len(classes) + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 1
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(int(v)),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if v > top / 2 else "black",
        )
    fig.tight_layout()
    return fig


def explanation_grid_png(explanation, images: torch.Tensor | None = None) -> bytes:
    """PNG of an explanation's maps (over ``images`` if given), one per column."""
    maps = explanation.normalized()[:, 0].detach().cpu()
    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 1.9), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.axis("off")
        if images is not None:
            ax.imshow(_as_hwc(images[i]), interpolation="nearest")
            ax.imshow(maps[i], cmap="jet", alpha=0.5, interpolation="bilinear")
        else:
            ax.imshow(maps[i], cmap="inferno", interpolation="nearest")
        ax.set_title(f"{explanation.method}\ntarget {int(explanation.target[i])}", fontsize=7)
    return to_png(fig)

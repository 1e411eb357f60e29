"""Report figures: embedded in the page as PNG data with their measures, and the
grids and plots the report's sections draw.

Every figure follows the rule of :mod:`cnnlens.plotting` (native size, legible
text and maps); :func:`figure_html` writes the measures :func:`~cnnlens.plotting.render`
takes into the ``<img>`` tag, so a test can check every figure of a report.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

import numpy as np
import torch

from ..plotting import DPI, GAP_PX, MAP_PX, SMALL_PT, TITLE_PT, as_hwc, plt, pt_to_px, render


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(fig, alt: str) -> str:
    """The figure embedded at its native size (reports stay self-contained), with its measures.

    ``data-text-px`` / ``data-map-px`` are the smallest text and map in CSS px.
    """
    r = render(fig)
    measures = (("text", r.text_px), ("map", r.map_px))
    facts = "".join(f' data-{k}-px="{v:.1f}"' for k, v in measures if v is not None)
    return (
        f'<span class="figure"><img alt="{html.escape(alt)}" width="{r.width_px}" '
        f'height="{r.height_px}"'
        f'{facts} src="{data_uri(r.png)}"></span>'
    )


class CellGrid:
    """A figure of ``rows x columns`` square cells of ``cell_px``, placed to the pixel.

    One Axes spans the figure in pixel coordinates (y down): a cell is exactly
    ``cell_px`` on screen, and hundreds of cells stay cheap (no Axes each).
    ``left_px`` leaves room for row labels, ``title_px`` (one value or one per
    row) for titles above a row.
    """

    def __init__(
        self,
        rows: int,
        columns: int,
        *,
        cell_px: int = MAP_PX,
        gap_px: int = GAP_PX,
        left_px: int = 0,
        title_px: int | Sequence[int] = 0,
    ):
        tops = [title_px] * rows if isinstance(title_px, int) else list(title_px)
        self.cell = cell_px
        self.x = [left_px + j * (cell_px + gap_px) for j in range(columns)]
        self.y = [sum(tops[: i + 1]) + i * (cell_px + gap_px) for i in range(rows)]
        width, height = self.x[-1] + cell_px, self.y[-1] + cell_px
        self.fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set(xlim=(0, width), ylim=(height, 0))
        self.ax.set_autoscale_on(False)
        self.ax.axis("off")

    def _place(self, i: int, j: int, shape) -> tuple[float, float, float]:
        """Top-left corner and scale of an ``(H, W)`` image centred in cell ``(i, j)``."""
        h, w = shape[:2]
        scale = self.cell / max(h, w)
        return (
            self.x[j] + (self.cell - w * scale) / 2,
            self.y[i] + (self.cell - h * scale) / 2,
            scale,
        )

    def image(self, i: int, j: int, array: np.ndarray, **imshow) -> None:
        """Draw ``array`` (``imshow`` arguments) fitted into cell ``(i, j)``."""
        x, y, scale = self._place(i, j, array.shape)
        h, w = array.shape[:2]
        extent = (x, x + w * scale, y + h * scale, y)
        self.ax.imshow(array, extent=extent, aspect="auto", **imshow)

    def rectangle(self, i: int, j: int, shape, box: Sequence[float], **style) -> None:
        """Outline pixels ``box = (x0, y0, x1, y1)`` (inclusive) of a ``shape`` image in a cell."""
        x, y, scale = self._place(i, j, shape)
        x0, y0, x1, y1 = box
        corner = (x + x0 * scale, y + y0 * scale)
        size = ((x1 - x0 + 1) * scale, (y1 - y0 + 1) * scale)
        self.ax.add_patch(plt.Rectangle(corner, *size, fill=False, **style))

    def title(self, i: int, j: int, text: str, **style) -> None:
        """Text centred above cell ``(i, j)`` (in the room ``title_px`` left)."""
        x, y = self.x[j] + self.cell / 2, self.y[i] - 3
        self.ax.text(x, y, text, ha="center", va="bottom", fontsize=TITLE_PT, **style)

    def label(self, i: int, text: str, **style) -> None:
        """Text beside row ``i``, right-aligned in the room ``left_px`` left."""
        x, y = self.x[0] - 8, self.y[i] + self.cell / 2
        self.ax.text(x, y, text, ha="right", va="center", fontsize=TITLE_PT, **style)


def title_px(titles: Sequence[str], *, points: float = TITLE_PT) -> int:
    """Height in px to keep above a cell for the tallest of ``titles``."""
    lines = max((t.count("\n") + 1 for t in titles), default=0)
    return int(round(lines * 1.25 * pt_to_px(points) + 6)) if lines else 0


def image_grid(
    images: torch.Tensor,
    titles: Sequence[str] | None = None,
    *,
    boxes: torch.Tensor | None = None,
    title_colors: Sequence[str] | None = None,
    columns: int = 8,
    cell_px: int = 128,
):
    """A grid of ``[N,C,H,W]`` images in [0,1] with optional titles and boxes.

    Cells are ``cell_px`` square, 14 px apart so titles of about 18 characters fit.
    """
    n = len(images)
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    top = title_px(titles) if titles is not None else 0
    grid = CellGrid(rows, columns, cell_px=cell_px, gap_px=14, title_px=top)
    for k in range(n):
        i, j = divmod(k, columns)
        image = as_hwc(images[k])
        grid.image(i, j, image, cmap="gray", interpolation="nearest")
        if boxes is not None:
            box = [float(v) for v in boxes[k]]
            grid.rectangle(i, j, image.shape, box, edgecolor="yellow", linewidth=1.2)
        if titles is not None:
            grid.title(i, j, titles[k], color=title_colors[k] if title_colors else "black")
    return grid.fig


def line_plot(series: dict[str, Sequence[float]], *, xlabel: str, ylabel: str, title: str = ""):
    """One line per series against 1, 2, 3, ... (e.g. epochs)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, ys in series.items():
        ax.plot(range(1, len(ys) + 1), ys, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=SMALL_PT)
    fig.tight_layout()
    return fig


def confusion_plot(matrix: np.ndarray, classes: Sequence[str]):
    """Counts of (true, predicted) classes, the count written in each cell."""
    fig, ax = plt.subplots(figsize=(0.5 * len(classes) + 2.5, 0.5 * len(classes) + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=TITLE_PT)
    ax.set_yticks(range(len(classes)), classes, fontsize=TITLE_PT)
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
            fontsize=SMALL_PT,
            color="white" if v > top / 2 else "black",
        )
    fig.tight_layout()
    return fig


def labelled_scatter(xy: np.ndarray, labels: Sequence[int], names: dict[int, str], *, title: str):
    """A 2-D embedding, one colour per label (e.g. paper 004's Fig. 3: t-SNE of the
    relabelled samples); ``names`` maps each label to its legend text."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=DPI)
    labels = np.asarray(labels)
    colours = ("tab:red", "tab:blue", "tab:green", "tab:orange")
    for colour, (label, name) in zip(colours, names.items(), strict=False):
        pick = labels == label
        ax.scatter(xy[pick, 0], xy[pick, 1], s=8, c=colour, label=f"{name} ({int(pick.sum())})")
    ax.set_title(title, fontsize=TITLE_PT)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=SMALL_PT, loc="best")
    fig.tight_layout()
    return fig

"""Figures of a network dissection (:class:`cnnlens.analysis.Dissection`).

:func:`interpretability_chart`: the share of interpretable channels per layer and how
many channels detect each concept (Bau et al. 2017, Figures 5 and 8, as bars).
:func:`top_images_figure`: for a few channels, their top activating images with the
channel's segmentation ``M_k`` (the activation map upsampled bilinearly and thresholded
at ``T_k``) outlined and the rest dimmed (Bau et al. Figure 3). Both follow the
report's figure rule (:mod:`cnnlens.plotting`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.ticker import MaxNLocator

from ..analysis.concepts.dissection import DissectionResult
from ..data.adapt import as_dataset
from ..plotting import COLUMN_PX, DPI, GAP_PX, MAP_PX, SMALL_PT, TITLE_PT, as_hwc, plt
from .figures import CellGrid

LABEL_PX = 150  # room left of a row of top images for "layer3.2 #17 / class=star / IoU 0.21"
DIM = 0.55  # opacity of the black laid over the pixels outside M_k


def interpretability_chart(result: DissectionResult, *, title: str | None = None):
    """Bars: share of interpretable channels per layer (with ``k/C`` over each bar), and the
    number of detector channels of each concept over all layers (concepts with none left out)."""
    rows = result.summary()
    counts = {c: k for c, k in result.detectors().items() if k}
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(min(COLUMN_PX, 1000) / DPI, 3.8), dpi=DPI, width_ratios=(1.35, 1)
    )
    x = np.arange(len(rows))
    shares = [100 * r["share"] for r in rows]
    left.bar(x, shares, color="#4c72b0")
    for i, r in enumerate(rows):
        left.text(
            i,
            shares[i] + 1.5,
            f"{r['interpretable']}/{r['channels']}",
            ha="center",
            va="bottom",
            fontsize=SMALL_PT,
        )
    left.set_xticks(x, [r["layer"] for r in rows], rotation=60, ha="right", fontsize=SMALL_PT)
    left.tick_params(axis="y", labelsize=SMALL_PT)
    left.set_ylim(0, 115)
    left.set_ylabel("interpretable channels (%)", fontsize=TITLE_PT)
    left.set_title(
        title or f"IoU > {result.iou_threshold:g} with a concept ({result.n_images} images)",
        fontsize=TITLE_PT,
    )
    if counts:
        names = sorted(counts, key=lambda c: (-counts[c], c))[:16]
        y = np.arange(len(names))
        right.barh(y, [counts[c] for c in names], color="#dd8452")
        right.set_yticks(y, names, fontsize=SMALL_PT)
        right.invert_yaxis()
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
        right.tick_params(axis="x", labelsize=SMALL_PT)
    else:
        right.text(0.5, 0.5, "no detector", ha="center", va="center", fontsize=TITLE_PT)
        right.set_yticks([])
    right.set_xlabel("detector channels (all layers)", fontsize=TITLE_PT)
    right.set_title("concepts detected", fontsize=TITLE_PT)
    fig.tight_layout()
    return fig


def top_images_figure(
    result: DissectionResult,
    data: object,
    units: Sequence[tuple[str, int]] | None = None,
    *,
    k: int | None = None,
    count: int = 6,
):
    """One row per channel ``(layer, channel)`` of ``units`` (default: the ``count``
    strongest detectors, :meth:`~cnnlens.analysis.DissectionResult.strongest`): its top ``k``
    images of ``data`` (the data set dissected), ``M_k`` outlined in yellow, the rest dimmed."""
    data = as_dataset(data)
    units = list(units) if units is not None else result.strongest(count)
    if not units:
        units = result.strongest(count, labelled=False)
    fits = int((COLUMN_PX - LABEL_PX + GAP_PX) // (MAP_PX + GAP_PX))
    k = min(k or fits, fits, *(int(result[layer].top_images.shape[1]) for layer, _ in units))
    grid = CellGrid(len(units), k, left_px=LABEL_PX)
    for i, (layer, channel) in enumerate(units):
        d = result[layer]
        label = d.labels[channel]
        concept = label or f"({result.concepts[int(d.best[channel])]})"
        grid.label(i, f"{layer} #{channel}\n{concept}\nIoU {float(d.best_iou[channel]):.3f}")
        indices = d.top_images[channel, :k]
        images = data.raw_batch(indices)
        maps = d.top_maps[channel, :k].float()[:, None]
        size = tuple(images.shape[-2:])
        if tuple(maps.shape[-2:]) != size:
            maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
        threshold = float(d.thresholds[channel])
        for j in range(len(indices)):
            _unit_cell(grid, i, j, images[j], maps[j, 0], threshold)
    return grid.fig


def _unit_cell(grid: CellGrid, i: int, j: int, image: torch.Tensor, up, threshold: float):
    """The image in cell ``(i, j)`` with the pixels outside ``up > threshold`` dimmed and the
    boundary drawn as the ``threshold`` contour of ``up``."""
    picture = as_hwc(image)
    grid.image(i, j, picture, cmap="gray", interpolation="nearest")
    region = (up > threshold).numpy()
    shade = np.zeros((*region.shape, 4))
    shade[..., 3] = np.where(region, 0.0, DIM)
    grid.image(i, j, shade, interpolation="nearest")
    values = up.numpy()
    if values.max() > threshold > values.min():
        x, y, scale = grid._place(i, j, values.shape)
        xs = x + (np.arange(values.shape[1]) + 0.5) * scale
        ys = y + (np.arange(values.shape[0]) + 0.5) * scale
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            grid.ax.contour(xs, ys, values, levels=[threshold], colors="yellow", linewidths=1.3)

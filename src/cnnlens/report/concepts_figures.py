"""Figures of concept-level explanations (:mod:`cnnlens.analysis.concepts.crp`,
:mod:`cnnlens.analysis.concepts.relmax`).

:func:`reference_figure`: one row per channel, its top images by relevance (with the
channel's conditional heatmap laid over them, red where the concept's relevance is
positive, blue where negative) beside its top images by activation, each with the
receptive-field crop of its maximum outlined (Achtibat et al. 2023, Figure 4: relevance
against activation maximisation). Follows the figure rule (:mod:`cnnlens.plotting`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..analysis.concepts.relmax import ReferenceImages
from ..data.adapt import as_dataset
from ..plotting import COLUMN_PX, GAP_PX, MAP_PX, as_hwc
from .figures import CellGrid, title_px

LABEL_PX = 150  # room for "layer2 #17 / striped / IoU 0.21" left of a row


def fits(columns_px: int = COLUMN_PX) -> int:
    """Images per ranking that fit a row of ``columns_px`` (both rankings and an empty
    column between them)."""
    return max(1, (int((columns_px - LABEL_PX) // (MAP_PX + GAP_PX)) - 1) // 2)


def heat_overlay(image: torch.Tensor, heat: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The image in grey and an RGBA layer of the signed heatmap (its own scale)."""
    grey = as_hwc(image)
    if grey.ndim == 3 and grey.shape[2] == 3:
        grey = grey.mean(2)
    h = heat.float()
    scale = float(h.abs().max()) or 1.0
    v = (h / scale).clamp(-1, 1).numpy()
    rgba = np.zeros((*v.shape, 4))
    rgba[..., 0] = v > 0
    rgba[..., 2] = v < 0
    rgba[..., 3] = np.abs(v) * 0.85
    return grey, rgba


def reference_figure(
    refs: ReferenceImages,
    data: object,
    channels: Sequence[int],
    heatmaps: Mapping[int, torch.Tensor],
    *,
    names: Mapping[int, str] | None = None,
    k: int | None = None,
):
    """Rows: ``channels`` of ``refs.layer``; left, the top ``k`` images by relevance
    with ``heatmaps[c]`` (``[top, H, W]``, the conditional maps of those images) over
    them; right, the top ``k`` by activation (default: what fits the report's column);
    ``names[c]`` under the channel's label."""
    data = as_dataset(data)
    k = min(k or fits(), refs.top, refs.seen_)
    titles = ["by relevance", "by activation"]
    top = title_px(titles)
    rows = len(channels)
    grid = CellGrid(rows, 2 * k + 1, left_px=LABEL_PX, title_px=[top] + [0] * (rows - 1))
    grid.title(0, (k - 1) // 2, titles[0])
    grid.title(0, k + 1 + (k - 1) // 2, titles[1])
    for i, c in enumerate(channels):
        label = f"{refs.layer} #{c}"
        if names and names.get(c):
            label += f"\n{names[c]}"
        grid.label(i, label)
        for half, ranking in enumerate(("relevance", "activation")):
            indices = refs.image_[ranking][c, :k]
            images = data.raw_batch(indices)
            boxes = refs.boxes(ranking, c)
            for j in range(len(indices)):
                col = j if half == 0 else k + 1 + j
                if half == 0:
                    grey, rgba = heat_overlay(images[j], heatmaps[c][j])
                    grid.image(i, col, grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                    grid.image(i, col, rgba, interpolation="nearest")
                else:
                    grid.image(i, col, as_hwc(images[j]), interpolation="nearest")
                t, left, b, r = boxes[j]
                style = {"edgecolor": "yellow", "linewidth": 1.2}
                grid.rectangle(i, col, images.shape[-2:], (left, t, r - 1, b - 1), **style)
    return grid.fig

"""Heatmap of a layer-similarity matrix (:func:`cnnlens.analysis.similarity.layer_similarity`).

Kornblith et al. 2019 (Figure 2 onward) and Nguyen et al. 2021 show CKA
between all pairs of layers as a heatmap, input at the top left. This one
follows the report's figure rule (:mod:`cnnlens.plotting`): at most
:data:`~cnnlens.plotting.COLUMN_PX` wide, no text under 11 px, values
written in the cells while they fit.
"""

from __future__ import annotations

import numpy as np

from ..analysis.similarity.layer_similarity import LayerSimilarity
from ..plotting import COLUMN_PX, DPI, MIN_MAP_PX, SMALL_PT, TITLE_PT, plt, pt_to_px

CELL_PX = 40  # a cell holding "0.95" at SMALL_PT
MIN_LABEL_PX = 14.0  # one tick label per row needs this much height
MARGIN_PX = 260  # tick labels, colour bar and their text beside the cells


def similarity_heatmap(result: LayerSimilarity, *, title: str | None = None):
    """A figure of ``result.matrix``: rows and columns named by layer, values in [0, 1]."""
    values = result.matrix.numpy()
    n_rows, n_cols = values.shape
    cell = min(CELL_PX, (COLUMN_PX - MARGIN_PX) / max(n_rows, n_cols))
    cell = max(cell, 1.1 * MIN_MAP_PX / min(n_rows, n_cols))  # a 1 x L matrix stays legible
    label = max(len(name) for name in [*result.rows, *result.columns])
    label_px = label * 0.62 * pt_to_px(SMALL_PT) + 30
    width = (label_px + n_cols * cell + 130) / DPI
    height = (label_px + n_rows * cell + 50) / DPI
    fig, ax = plt.subplots(figsize=(width, height), dpi=DPI)
    image = ax.imshow(values, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    step_rows = max(1, int(np.ceil(MIN_LABEL_PX / cell)))
    ax.set_yticks(range(0, n_rows, step_rows), result.rows[::step_rows], fontsize=SMALL_PT)
    ax.set_xticks(
        range(0, n_cols, step_rows), result.columns[::step_rows], fontsize=SMALL_PT, rotation=90
    )
    if cell >= CELL_PX:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                color = "black" if v > 0.6 else "white"
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=SMALL_PT, color=color)
    name = {"cka": "linear CKA", "svcca": "SVCCA"}[result.method]
    if result.estimator == "minibatch":
        name += " (minibatch)"
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
    bar.set_label(name, fontsize=TITLE_PT)
    bar.ax.tick_params(labelsize=SMALL_PT)
    same = result.rows == result.columns
    ax.set_ylabel("layer", fontsize=TITLE_PT)
    ax.set_xlabel("layer" if same else "layer of the other model", fontsize=TITLE_PT)
    ax.tick_params(labelsize=SMALL_PT)
    default = f"{name} between layers, {result.n} images, {result.reduce} features"
    ax.set_title(title or default, fontsize=TITLE_PT)
    fig.tight_layout()
    return fig

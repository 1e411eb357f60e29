"""Heatmap of TCAV scores (:class:`cnnlens.analysis.TCAV`): concepts by classes.

Kim et al. 2018 (Figures 4 and 6) show TCAV scores as bars per concept and
class, with the ones that fail the significance test marked. A grid reads
better when there are ten concepts and eight classes: one cell per (concept,
class) with the mean score over the random runs, a star where the
significance test (``result.test``) rejects, and the random baseline as the
last row. Follows the report's figure rule (:mod:`cnnlens.plotting`).
"""

from __future__ import annotations

import numpy as np

from ..analysis.concepts.tcav import TCAVResult
from ..plotting import COLUMN_PX, DPI, SMALL_PT, TITLE_PT, plt, pt_to_px

CELL_PX = 44  # a cell holding "0.95*" at SMALL_PT
RANDOM_ROW = "random (baseline)"


def tcav_heatmap(result: TCAVResult, *, title: str | None = None):
    """A figure of ``result.mean`` ``[C, K]`` plus the random baseline row, values in [0, 1]."""
    rows = [*result.concepts, RANDOM_ROW]
    values = np.vstack([result.mean.numpy(), result.random_scores.mean(-1).numpy()[None]])
    stars = np.vstack([result.significant.numpy(), np.zeros((1, values.shape[1]), dtype=bool)])
    n_rows, n_cols = values.shape
    label_px = max(len(name) for name in rows) * 0.62 * pt_to_px(SMALL_PT) + 30
    column_px = max(len(name) for name in result.class_names) * 0.62 * pt_to_px(SMALL_PT) + 30
    cell = min(CELL_PX, (COLUMN_PX - label_px - 130) / n_cols)
    width = (label_px + n_cols * cell + 130) / DPI
    height = (column_px + n_rows * cell + 60) / DPI
    fig, ax = plt.subplots(figsize=(width, height), dpi=DPI)
    image = ax.imshow(values, cmap="coolwarm", vmin=0, vmax=1, interpolation="nearest")
    ax.axhline(n_rows - 1.5, color="black", linewidth=1)
    ax.set_yticks(range(n_rows), rows, fontsize=SMALL_PT)
    ax.set_xticks(range(n_cols), result.class_names, fontsize=SMALL_PT, rotation=90)
    if cell >= CELL_PX:
        for (i, j), v in np.ndenumerate(values):
            text = f"{v:.2f}" + ("*" if stars[i, j] else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=SMALL_PT, color="black")
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
    bar.set_label("TCAV score", fontsize=TITLE_PT)
    bar.ax.tick_params(labelsize=SMALL_PT)
    ax.set_xlabel("class", fontsize=TITLE_PT)
    ax.set_ylabel("concept", fontsize=TITLE_PT)
    runs = result.scores.shape[-1]
    default = (
        f"TCAV at {result.layer}, {runs} random runs (* p < {result.alpha / result.tests:.2g}, "
        f"{result.test} test)"
    )
    ax.set_title(title or default, fontsize=TITLE_PT)
    fig.tight_layout()
    return fig

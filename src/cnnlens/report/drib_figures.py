"""Heatmaps of which mask indices and channels each class uses in a gated network
(:func:`cnnlens.studies.drib.usage`). Follows the report's figure rule (:mod:`.figures`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..plotting import COLUMN_PX, DPI, MIN_MAP_PX, SMALL_PT, TITLE_PT, plt, pt_to_px


def _label_px(names: Sequence[str]) -> float:
    return max(len(n) for n in names) * 0.62 * pt_to_px(SMALL_PT) + 30


def index_usage_heatmap(index_freq: dict[str, list], classes: Sequence[str]):
    """Classes x (layer, mask index): how often each class chose each index, in [0, 1]."""
    layers = list(index_freq)
    blocks = [np.asarray(index_freq[k], dtype=float) for k in layers]
    m = blocks[0].shape[1]
    values = np.hstack(blocks)
    k, cols = values.shape
    label = _label_px(classes)
    cell_w = min(28.0, (COLUMN_PX - label - 140) / cols)
    cell_h = max(22.0, MIN_MAP_PX / k)
    fig, ax = plt.subplots(
        figsize=((label + cols * cell_w + 140) / DPI, (k * cell_h + 150) / DPI), dpi=DPI
    )
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for j in range(1, len(layers)):
        ax.axvline(j * m - 0.5, color="white", linewidth=1.5)
    ax.set_yticks(range(k), classes, fontsize=SMALL_PT)
    ax.set_xticks(
        [j * m + (m - 1) / 2 for j in range(len(layers))],
        [_short(n) for n in layers],
        fontsize=SMALL_PT,
        rotation=90,
    )
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.ax.tick_params(labelsize=SMALL_PT)
    bar.set_label("share of the class", fontsize=TITLE_PT)
    ax.set_title(f"mask index chosen per class ({m} per gated layer)", fontsize=TITLE_PT)
    fig.tight_layout()
    return fig


def channel_usage_heatmap(channel_freq: dict[str, list], classes: Sequence[str]):
    """One panel per layer: classes x channels, how often a class used each channel."""
    layers = list(channel_freq)
    k = len(classes)
    label = _label_px(classes)
    widest = max(len(channel_freq[n][0]) for n in layers)
    cell_w = min(12.0, (COLUMN_PX - label - 140) / widest)
    cell_h = max(14.0, MIN_MAP_PX / k)
    panel = k * cell_h + 60
    fig, axes = plt.subplots(
        len(layers),
        1,
        figsize=((label + widest * cell_w + 140) / DPI, (len(layers) * panel + 40) / DPI),
        dpi=DPI,
        squeeze=False,
    )
    image = None
    for ax, name in zip(axes[:, 0], layers, strict=True):
        values = np.asarray(channel_freq[name], dtype=float)
        image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_yticks(range(k), classes, fontsize=SMALL_PT)
        ax.tick_params(axis="x", labelsize=SMALL_PT)
        ax.set_title(f"{name}: channels used per class", fontsize=TITLE_PT)
    bar = fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.03, pad=0.02)
    bar.ax.tick_params(labelsize=SMALL_PT)
    bar.set_label("share of the class", fontsize=TITLE_PT)
    return fig


def _short(name: str) -> str:
    return name.replace("layer", "L").replace(".conv1", "").replace("features.", "f")

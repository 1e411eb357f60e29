"""Figures of the attribute network (paper 003): the attribute x channel grid of mean mask
values (Fig. 5), the channel correlation matrix (Fig. 6), each attribute's top channels' masks
on example images (Fig. 4) and pruning curves (Fig. 7). Follows the report's figure rule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..plotting import DPI, MAP_PX, SMALL_PT, TITLE_PT, as_hwc, plt
from .figures import CellGrid, title_px


def mask_grid_plot(mask_means: np.ndarray, names: Sequence[str]):
    """Heatmap ``[K,C]`` of mean mask values, attributes by channels (Fig. 5)."""
    k, c = mask_means.shape
    cell = max(4.0, min(8.0, 860 / c))
    width = (110 + c * cell + 120) / DPI
    height = max(2.4, (k * max(cell, 16) + 110) / DPI)
    fig, ax = plt.subplots(figsize=(width, height), dpi=DPI)
    image = ax.imshow(mask_means, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(k), list(names), fontsize=SMALL_PT)
    ax.set_xlabel("feature channel", fontsize=TITLE_PT)
    ax.tick_params(axis="x", labelsize=SMALL_PT)
    ax.set_title("mean attention-mask value per attribute and channel", fontsize=TITLE_PT)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.ax.tick_params(labelsize=SMALL_PT)
    fig.tight_layout()
    return fig


def channel_correlation_plot(correlation: np.ndarray):
    """Heatmap ``[C,C]`` of the Pearson correlation of the pooled channels (Fig. 6)."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=DPI)
    image = ax.imshow(correlation, cmap="coolwarm", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xlabel("channel", fontsize=TITLE_PT)
    ax.set_ylabel("channel", fontsize=TITLE_PT)
    ax.tick_params(labelsize=SMALL_PT)
    ax.set_title("correlation of the pooled feature channels", fontsize=TITLE_PT)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.ax.tick_params(labelsize=SMALL_PT)
    fig.tight_layout()
    return fig


def top_mask_grid(
    images: torch.Tensor, masks: torch.Tensor, names: Sequence[str], channels: torch.Tensor
):
    """Rows: attributes; columns: per image, the image then its top channels' masks (Fig. 4).

    ``images`` ``[N,3,H,W]`` in [0,1], ``masks`` ``[K,N,T,H,W]``, ``channels`` ``[K,T]``.
    """
    k, n, t = masks.shape[:3]
    columns = n * (1 + t)
    titles = [f"ch {int(c)}" for c in channels[0]]
    grid = CellGrid(
        k,
        columns,
        cell_px=MAP_PX,
        left_px=int(max(len(a) for a in names) * 0.62 * TITLE_PT * DPI / 72 + 16),
        title_px=title_px(["x"]),
    )
    for i in range(k):
        grid.label(i, names[i])
        for j in range(n):
            base = j * (1 + t)
            grid.image(i, base, as_hwc(images[j]), interpolation="nearest")
            for s in range(t):
                grid.image(
                    i,
                    base + 1 + s,
                    masks[i, j, s].numpy(),
                    cmap="magma",
                    vmin=0,
                    vmax=1,
                    interpolation="nearest",
                )
                grid.title(i, base + 1 + s, f"ch {int(channels[i, s])}")
    del titles
    return grid.fig


def pruning_plot(curves: dict[str, dict], channels: int):
    """Mean accuracy against pruned channels per order; random: mean with a min-max band."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=DPI)
    for name, curve in curves.items():
        x = np.asarray(curve["counts"])
        per = np.asarray(curve["per_order"]) * 100
        mean = per.mean(0)
        ax.plot(x, mean, marker="o", markersize=3, label=name)
        if per.shape[0] > 1:
            ax.fill_between(x, per.min(0), per.max(0), alpha=0.2)
    ax.set_xlabel(f"pruned channels (of {channels})", fontsize=TITLE_PT)
    ax.set_ylabel("mean attribute accuracy (%)", fontsize=TITLE_PT)
    ax.tick_params(labelsize=SMALL_PT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=SMALL_PT)
    fig.tight_layout()
    return fig


def robustness_plot(grid: dict):
    """Mean attribute accuracy against input-noise std, one line per mask transformation
    g(M; n, beta) (paper 003, Fig. 8); ``grid`` is ``RobustnessGrid.to_dict()``."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=DPI)
    stds = np.asarray(grid["stds"])
    for (n, beta), accs in zip(grid["transforms"], grid["mean_accuracy"], strict=True):
        label = "none (n=1, β=0)" if (n, beta) == (1.0, 0.0) else f"n={n:g}, β={beta:g}"
        style = {"color": "black", "linewidth": 2} if (n, beta) == (1.0, 0.0) else {}
        ax.plot(stds, 100 * np.asarray(accs), marker="o", markersize=3, label=label, **style)
    ax.set_xlabel("input noise std (share of the [0, 1] range)", fontsize=TITLE_PT)
    ax.set_ylabel("mean attribute accuracy (%)", fontsize=TITLE_PT)
    ax.tick_params(labelsize=SMALL_PT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=SMALL_PT, title="mask transformation", title_fontsize=SMALL_PT)
    fig.tight_layout()
    return fig

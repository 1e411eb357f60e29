"""Matplotlib figures of the influential-feature analysis (paper 002, Figs. 2-4, Table 7).

Each function returns a figure; callers save it (``cnnlens.plotting.to_png``
or ``fig.savefig`` through :func:`cnnlens.io.atomic_path`). Sizes follow the
report's figure rule (``cnnlens.plotting``): at most 11.5 in wide at
100 dpi, no text under 8.5 pt (11.8 px).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def sweep_heatmap(k1s: Sequence[int], k2s: Sequence[int], grid: torch.Tensor, *, title: str):
    """Heatmap of r_A over k1 (rows) and k2 (columns); blank where k2 > k1 (Figure 3)."""
    fig, ax = plt.subplots(figsize=(0.6 * len(k2s) + 2.5, 0.5 * len(k1s) + 1.8))
    values = grid.numpy()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=np.nanmin(values), vmax=1)
    ax.set_xticks(range(len(k2s)), [str(k) for k in k2s])
    ax.set_yticks(range(len(k1s)), [str(k) for k in k1s])
    ax.set_xlabel("k2 (influential features per class)")
    ax.set_ylabel("k1 (top features per image)")
    for i in range(len(k1s)):
        for j in range(len(k2s)):
            if np.isfinite(values[i, j]):
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8.5,
                    color="white" if values[i, j] < 0.8 else "black",
                )
    fig.colorbar(image, ax=ax, label="r_A = A_d / A_f")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def histogram_plot(histograms: torch.Tensor, classes: Sequence[str], indices: torch.Tensor):
    """Per class, how often each feature is among an image's top k1 (Figure 2)."""
    k = histograms.shape[0]
    cols = min(4, k)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.0 * rows), squeeze=False)
    for c in range(rows * cols):
        ax = axes[c // cols][c % cols]
        if c >= k:
            ax.axis("off")
            continue
        h = histograms[c].float().cpu()
        freq = (h / h.sum().clamp_min(1)).numpy()
        colors = np.array(["#bbbbbb"] * len(freq), dtype=object)
        colors[indices[c].cpu().numpy()] = "#d62728"
        ax.bar(np.arange(len(freq)), freq, color=list(colors), width=1.0)
        ax.set_title(str(classes[c]), fontsize=10)
        ax.tick_params(labelsize=8.5)
    fig.suptitle("share of top-k1 slots per feature (red: influential)", fontsize=11)
    fig.tight_layout()
    return fig


def depth_plot(rows: list[dict]):
    """r_A (and A_f, A_d) against network depth (Figure 4)."""
    depth = [r["depth"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    ax[0].plot(depth, [r["r_A"] for r in rows], "o-")
    ax[0].set_xlabel("depth (layers)")
    ax[0].set_ylabel("r_A = A_d / A_f")
    ax[0].set_title("relative accuracy vs depth")
    ax[1].plot(depth, [r["A_f"] for r in rows], "o-", label="A_f (full)")
    ax[1].plot(depth, [r["A_d"] for r in rows], "s--", label="A_d (decomposed)")
    ax[1].set_xlabel("depth (layers)")
    ax[1].set_ylabel("test accuracy")
    ax[1].legend(fontsize=9)
    fig.tight_layout()
    return fig


def family_depth_plot(rows: list[dict]):
    """r_A of a linear probe at each stage against depth, one line per family; a star at
    the last point for the network's own head (:mod:`.stages`, paper 002 Figure 4)."""
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, family in enumerate(dict.fromkeys(r["family"] for r in rows)):
        own = [r for r in rows if r["family"] == family]
        colour = f"C{i}"
        ax[0].plot([r["depth"] for r in own], [r["r_A"] for r in own], "o-", color=colour,
                   label=family)  # fmt: skip
        ax[1].plot([r["index"] for r in own], [r["r_A"] for r in own], "o-", color=colour)
        last = own[-1]
        if "r_A_head" in last:
            ax[0].plot([last["depth"]], [last["r_A_head"]], "*", color=colour, markersize=12)
            ax[1].plot([last["index"]], [last["r_A_head"]], "*", color=colour, markersize=12)
    ax[0].set_xlabel("depth (conv + linear layers before the point)")
    ax[1].set_xlabel("stage index (last: the head's input)")
    for a in ax:
        a.set_ylabel("r_A = A_d / A_f")
        a.tick_params(labelsize=9)
    ax[0].legend(fontsize=9)
    fig.suptitle("r_A against depth (dots: linear probe, stars: the network's own head)",
                 fontsize=11)  # fmt: skip
    fig.tight_layout()
    return fig


def overlap_plot(matrix: torch.Tensor, classes: Sequence[str]):
    """Jaccard overlap of the influential sets between classes."""
    fig, ax = plt.subplots(figsize=(0.45 * len(classes) + 2.5, 0.45 * len(classes) + 1.8))
    image = ax.imshow(matrix.numpy(), cmap="magma", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(len(classes)), classes, fontsize=9)
    fig.colorbar(image, ax=ax, label="Jaccard index")
    fig.tight_layout()
    return fig


def maps_grid(images: torch.Tensor, maps: dict[str, torch.Tensor], titles: Sequence[str]):
    """Rows: images; columns: image and the influential / non-influential / all mean maps."""
    kinds = ("influential", "non_influential", "all")
    n = images.shape[0]
    fig, axes = plt.subplots(n, 4, figsize=(6.4, 1.6 * n), squeeze=False)
    for i in range(n):
        img = images[i].permute(1, 2, 0).cpu().numpy()
        axes[i][0].imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray")
        axes[i][0].set_ylabel(titles[i], fontsize=9)
        for j, kind in enumerate(kinds, start=1):
            axes[i][j].imshow(maps[kind][i, 0].cpu().numpy(), cmap="jet")
            if i == 0:
                axes[i][j].set_title(kind.replace("_", "-"), fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("image", fontsize=9)
    fig.tight_layout()
    return fig


def retrain_plot(histories: dict[str, list[dict]]):
    """Test accuracy per retraining epoch (epoch 0: right after decomposition)."""
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for name, rows in histories.items():
        ax.plot([r["epoch"] for r in rows], [r["test_accuracy"] for r in rows], "o-", label=name)
    ax.set_xlabel("retraining epoch")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def save_png(fig, path) -> None:
    """Write ``fig`` as a PNG atomically and close it."""
    from ...io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)

"""The information plane figure: I(Z;Y) against I(X;Z) per layer, coloured by epoch
(Shwartz-Ziv & Tishby 2017, Fig. 3; paper 000, section 4.3). One panel per estimator,
each titled with the estimator and its parameters."""

from __future__ import annotations

import textwrap

from matplotlib.ticker import MaxNLocator

from ..plotting import DPI, SMALL_PT, TITLE_PT, plt
from ..studies.drib.information_plane import estimator_text


def information_plane_plot(plane: dict):
    """Both estimators side by side from :meth:`InformationPlane.to_dict` output."""
    points = plane["points"]
    estimators = [e for e in ("binning", "kde") if any(p["estimator"] == e for p in points)]
    layers = list(dict.fromkeys(p["layer"] for p in points))
    epochs = [p["epoch"] for p in points]
    fig, axes = plt.subplots(
        1, len(estimators), figsize=(5.2 * len(estimators), 4.0), dpi=DPI, squeeze=False
    )
    markers = "osD^v<>"
    scatter = None
    for ax, estimator in zip(axes[0], estimators, strict=True):
        for i, layer in enumerate(layers):
            mine = sorted(
                (p for p in points if p["layer"] == layer and p["estimator"] == estimator),
                key=lambda p: p["epoch"],
            )
            xs, ys = [p["ixz"] for p in mine], [p["izy"] for p in mine]
            ax.plot(xs, ys, color="0.6", linewidth=0.8, zorder=1)
            scatter = ax.scatter(
                xs,
                ys,
                c=[p["epoch"] for p in mine],
                cmap="viridis",
                vmin=min(epochs),
                vmax=max(epochs),
                marker=markers[i % len(markers)],
                s=28,
                label=layer,
                zorder=2,
            )
        text = estimator_text(estimator, bins=plane["bins"], noise_variance=plane["noise_variance"])
        title = textwrap.fill(f"{text}; {plane['n']} images", 52)
        ax.set_title(title, fontsize=TITLE_PT)
        ax.set_xlabel("I(X;Z) (bits)", fontsize=TITLE_PT)
        ax.set_ylabel("I(Z;Y) (bits)", fontsize=TITLE_PT)
        ax.tick_params(labelsize=SMALL_PT)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=SMALL_PT, title="layer", title_fontsize=SMALL_PT)
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=list(axes[0]), fraction=0.03, pad=0.02)
        bar.set_label("epoch", fontsize=TITLE_PT)
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
        bar.ax.tick_params(labelsize=SMALL_PT)
    return fig

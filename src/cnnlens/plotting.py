"""Figures as PNG, rendered with matplotlib (Agg), and the rule every figure follows.

The rule, so a figure reads in a browser at 100 % zoom: it is saved at
:data:`DPI` and shown at its native size (one PNG pixel = one CSS pixel, never
scaled down by the page), at most :data:`COLUMN_PX` wide (the report's text
column), with no text under :data:`MIN_TEXT_PX` and no image or map under
:data:`MIN_MAP_PX` on a side. :func:`render` measures both on the figure as
drawn. The report (:mod:`cnnlens.report.figures`), the CLI's PNG files and a
notebook's view of an :class:`~cnnlens.types.Explanation` all render here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.text import Text  # noqa: E402

DPI = 100  # figure inches x DPI = pixels in the PNG = CSS pixels on screen
COLUMN_PX = 1150  # widest figure: the report's text column (its body max-width)
MIN_TEXT_PX = 11.0  # smallest text on screen (font size in px)
MIN_MAP_PX = 96  # smallest side of an image or map on screen
TITLE_PT = 9.0  # titles and labels: 12.5 px
SMALL_PT = 8.5  # ticks, legends, numbers in cells: 11.8 px
MAP_PX = 112  # side of one image / map cell in the report's grids
GAP_PX = 4  # space between cells of a grid


def pt_to_px(points: float) -> float:
    """Font size in points -> pixels on screen under the figure rule."""
    return points * DPI / 72


@dataclass(frozen=True)
class Rendered:
    """A figure as PNG with what a reader sees of it at 100 % zoom (in CSS px)."""

    png: bytes
    width_px: int
    height_px: int
    text_px: float | None  # the smallest text drawn (None: no text)
    map_px: float | None  # the smallest side of an image drawn (None: no image)

    def problems(self) -> list[str]:
        """What breaks the report's figure rule (empty when the figure is legible)."""
        out = []
        if self.width_px > COLUMN_PX:
            out.append(f"{self.width_px} px wide > column of {COLUMN_PX} px")
        if self.text_px is not None and self.text_px < MIN_TEXT_PX - 1e-6:
            out.append(f"text of {self.text_px:.1f} px < {MIN_TEXT_PX} px")
        if self.map_px is not None and self.map_px < MIN_MAP_PX - 0.5:
            out.append(f"maps of {self.map_px:.0f} px < {MIN_MAP_PX} px")
        return out


def _drawn_texts(artist) -> list[Text]:
    """Non-empty visible texts under ``artist``, skipping the axes of an Axes turned off."""
    if not artist.get_visible():
        return []
    if isinstance(artist, Text):
        return [artist] if artist.get_text().strip() else []
    skip = (artist.xaxis, artist.yaxis) if isinstance(artist, Axes) and not artist.axison else ()
    return [t for c in artist.get_children() if c not in skip for t in _drawn_texts(c)]


def _map_side_px(fig) -> float | None:
    """Smallest on-screen side of the images drawn in ``fig`` (after a draw)."""
    sides = []
    for image in (im for ax in fig.axes if ax.get_visible() for im in ax.images):
        if not image.get_visible():
            continue
        box = image.get_window_extent()
        ax = image.axes.bbox
        w = min(box.x1, ax.x1) - max(box.x0, ax.x0)
        h = min(box.y1, ax.y1) - max(box.y0, ax.y0)
        sides.append(max(0.0, min(w, h)) * DPI / fig.dpi)
    return min(sides) if sides else None


def render(fig) -> Rendered:
    """Save ``fig`` as PNG at :data:`DPI` (and close it), measuring its text and maps."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    texts = [pt_to_px(t.get_fontsize()) for t in _drawn_texts(fig)]
    map_px = _map_side_px(fig)
    plt.close(fig)
    png = buffer.getvalue()
    width, height = Image.open(io.BytesIO(png)).size
    return Rendered(png, width, height, min(texts) if texts else None, map_px)


def to_png(fig) -> bytes:
    """``fig`` as PNG bytes at :data:`DPI` (and closed): :func:`render` without the measures."""
    return render(fig).png


def as_hwc(image: torch.Tensor) -> np.ndarray:
    """``[C,H,W]`` image in [0, 1] as an ``[H,W,C]`` (or ``[H,W]``) array for ``imshow``."""
    arr = image.detach().cpu().float().clamp(0, 1)
    arr = arr.permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def explanation_grid_png(explanation, images: torch.Tensor | None = None) -> bytes:
    """PNG of an explanation's maps (over ``images`` if given), one per column."""
    maps = explanation.normalized()[:, 0].detach().cpu()
    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 1.9), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.axis("off")
        if images is not None:
            ax.imshow(as_hwc(images[i]), interpolation="nearest")
            ax.imshow(maps[i], cmap="jet", alpha=0.5, interpolation="bilinear")
        else:
            ax.imshow(maps[i], cmap="inferno", interpolation="nearest")
        ax.set_title(
            f"{explanation.method}\ntarget {int(explanation.target[i])}", fontsize=TITLE_PT
        )
    return to_png(fig)

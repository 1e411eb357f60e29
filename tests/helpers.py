"""Small helpers shared by test modules (not tests themselves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


def with_bn_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with every BatchNorm2d's running statistics and affine
    parameters drawn at random, as after training rather than the 0 / 1 of a new one."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=gen)
            m.running_var.uniform_(0.3, 3.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(-0.3, 0.3, generator=gen)
    return model.eval()


def above_chance(successes: int, trials: int, chance: float, *, alpha: float = 1e-4) -> bool:
    """One-sided binomial test: ``successes`` of ``trials`` are more than ``chance`` explains.

    For assertions on a trained model, whose exact numbers move with the CPU's kernels and
    the thread count: the margin over chance comes from the sample size, not a fixed gap.
    """
    from scipy.stats import binomtest

    return binomtest(successes, trials, chance, alternative="greater").pvalue < alpha


def embedded_figures(page: str) -> list[dict]:
    """Every ``<img>`` of a report page: its tag's size and measures, and its PNG's size."""
    import base64
    import io
    import re

    from PIL import Image

    out = []
    for tag in re.findall(r"<img [^>]*>", page):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag))
        png = base64.b64decode(attrs["src"].removeprefix("data:image/png;base64,"))
        out.append(
            {
                "alt": attrs.get("alt", ""),
                "width": int(attrs.get("width", 0)),
                "height": int(attrs.get("height", 0)),
                "png_size": Image.open(io.BytesIO(png)).size,
                "text_px": float(attrs.get("data-text-px", "nan")),
                "map_px": float(attrs["data-map-px"]) if "data-map-px" in attrs else None,
            }
        )
    return out


CELEBA_ATTRS = ["5_o_Clock_Shadow", "Smiling", "Young"]


def write_celeba(root: Path) -> None:
    """A CelebA folder in the original layout: 5 images (3 train, 1 val, 1 test), 3 attributes."""
    (root / "img_align_celeba").mkdir(exist_ok=True)
    names = [f"{i:06d}.jpg" for i in range(1, 6)]
    for name in names:
        image = np.zeros((60, 40, 3), dtype=np.uint8)
        image[:10, :, 0] = 255  # red band on top, blue at the bottom: cropped away
        image[10:50, :, 1] = 255
        image[50:, :, 2] = 255
        Image.fromarray(image).save(root / "img_align_celeba" / name, quality=100, subsampling=0)
    values = [[1, -1, 1], [-1, 1, 1], [-1, 1, -1], [1, 1, 1], [-1, -1, -1]]
    lines = [str(len(names)), " ".join(CELEBA_ATTRS) + " "]
    lines += [f"{n}  " + " ".join(f"{v:2d}" for v in row) for n, row in zip(names, values)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    parts = [0, 0, 0, 1, 2]
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{n} {p}\n" for n, p in zip(names, parts))
    )

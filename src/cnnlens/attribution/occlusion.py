"""Occlusion (Zeiler & Fergus 2014; survey 001): slide a window over the image,
replace it by a baseline and record how much the target score drops.

Each pixel gets the mean score drop over the windows that cover it, exactly as
Captum's ``Occlusion`` with ``sliding_window_shapes=(C, *window)``. All images
x window positions are evaluated together through :mod:`cnnlens.chunking`;
the per-pixel average is one transposed convolution of the drops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..accel import forward_runner
from ..chunking import run_chunked
from ..errors import InputError
from ..params import Param
from ..types import Explanation
from . import register
from ._perturb import baseline_like, pair, target_scores
from .base import BATCH_SIZE, FILL, MEMORY, SEED, Method


def window_masks(
    positions: torch.Tensor,
    grid_w: int,
    window: tuple[int, int],
    stride: tuple[int, int],
    size: tuple[int, int],
) -> torch.Tensor:
    """Boolean ``[k,1,H,W]`` masks of the windows at flat grid ``positions`` ``[k]``."""
    top = (positions // grid_w) * stride[0]
    left = (positions % grid_w) * stride[1]
    rows = torch.arange(size[0], device=positions.device)
    cols = torch.arange(size[1], device=positions.device)
    in_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + window[0])
    in_cols = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + window[1])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


@register
class Occlusion(Method):
    """Sliding-window occlusion.

    Hyperparameters: ``window`` (int or (h, w), default 4), ``stride`` (int or
    (h, w), default: the window, i.e. non-overlapping), ``baseline`` (fill value
    or tensor, default 0 = the data mean for normalised inputs), ``batch_size``.
    Windows are placed as in Captum (the last one cut at the border), so each
    pixel is covered. Maps: mean drop of the target logit over the windows
    covering each pixel; ``raw`` repeats it on every channel like Captum.
    """

    hyperparameters = {
        "window": Param("pair", 4, min=1),
        "stride": Param("pair", None, min=1, none=True, help="none: the window"),
        "baseline": FILL,
        "seed": SEED,
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }
    name = "occlusion"
    description = "sliding-window occlusion: target-score drop when a window is replaced"
    family = "Perturbation"

    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor, logits: torch.Tensor
    ) -> Explanation:
        p = self.params
        n, c, h, w = inputs.shape
        window = pair("window", p.get("window", 4))
        stride = pair("stride", window if p.get("stride") is None else p["stride"])
        if window[0] > h or window[1] > w:
            raise InputError(f"window {window} is larger than the images ({h}, {w})")
        if stride[0] > window[0] or stride[1] > window[1]:
            raise InputError(f"stride {stride} must not exceed the window {window}")
        # Captum's placement: shifts until the image is covered, the last window
        # cut at the border, so every pixel is covered at least once.
        grid = (-(-(h - window[0]) // stride[0]) + 1, -(-(w - window[1]) // stride[1]) + 1)
        per_image = grid[0] * grid[1]
        base = baseline_like(p.get("baseline", 0.0), inputs)
        reference = logits.gather(1, target[:, None])[:, 0]
        run = forward_runner(self.model, inputs)

        def occluded_scores(start: int, stop: int) -> torch.Tensor:
            item = torch.arange(start, stop, device=inputs.device)
            img = item // per_image
            masks = window_masks(item % per_image, grid[1], window, stride, (h, w))
            x = torch.where(masks, base[img], inputs[img])
            return target_scores(run, x, target[img])

        size = self.chunk(inputs, backward=False)
        scores = run_chunked(occluded_scores, n * per_image, size, desc="occlusion")
        drops = (reference[:, None] - scores.view(n, per_image)).view(n, 1, *grid)
        kernel = torch.ones(1, 1, *window, device=inputs.device, dtype=drops.dtype)
        total = F.conv_transpose2d(drops, kernel, stride=stride)
        counts = F.conv_transpose2d(torch.ones_like(drops), kernel, stride=stride)
        maps = total[..., :h, :w] / counts[..., :h, :w]
        return self.explanation(maps, target, raw=maps.expand(-1, c, -1, -1).contiguous())

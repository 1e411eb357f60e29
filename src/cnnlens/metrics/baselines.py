"""Reference maps every evaluation shows next to real methods: random and Sobel edges.

A method that does not beat them on a metric explains nothing the metric can see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_map(inputs: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """A uniform random map from an explicit generator, the same for every image (so
    an image's map does not depend on its batch), as ``[N,1,H,W]``."""
    n, _c, h, w = inputs.shape
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(1, 1, h, w, generator=gen).to(inputs.device).repeat(n, 1, 1, 1)


def sobel_map(inputs: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the image (summed over channels), ``[N,1,H,W]``."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=inputs.device)
    k = torch.stack([kx, kx.t()])[:, None].to(inputs.dtype)  # [2,1,3,3]
    c = inputs.shape[1]
    x = F.pad(inputs.reshape(-1, 1, *inputs.shape[2:]), (1, 1, 1, 1), mode="replicate")
    g = F.conv2d(x, k).view(inputs.shape[0], c, 2, *inputs.shape[2:])
    return g.square().sum(2).sqrt().sum(1, keepdim=True)


BASELINES = {"random": random_map, "sobel": sobel_map}

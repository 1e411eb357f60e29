"""Batched augmentation on the device: horizontal flips and padded random crops."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, ops: tuple[str, ...], generator: torch.Generator) -> torch.Tensor:
    """Apply ``ops`` to a batch ``[N,C,H,W]``, drawing randomness from ``generator`` (on CPU)."""
    n, _c, h, w = x.shape
    if "flip" in ops:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    if "crop" in ops:
        pad = 4
        padded = F.pad(x, (pad, pad, pad, pad))
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        rows = dy[:, None] + torch.arange(h, device=x.device)[None]  # [N,H]
        cols = dx[:, None] + torch.arange(w, device=x.device)[None]  # [N,W]
        idx_r = rows[:, None, :, None].expand(-1, x.shape[1], -1, padded.shape[-1])
        x = padded.gather(2, idx_r)
        idx_c = cols[:, None, None, :].expand(-1, x.shape[1], h, -1)
        x = x.gather(3, idx_c)
    return x

"""Seeded draws that do not depend on the batch.

An image's explanation or score depends on the image, the model, the parameters and
the seed, never on the other images of its batch or shard (DESIGN.md). So a method
or metric that draws noise, masks or samples draws them from the seed alone and uses
the same draws for every image (as RISE shares its masks): sample ``j`` of every
image gets draw ``j``, whatever the batch, its order or the chunk size.
"""

from __future__ import annotations

import torch

from .errors import InputError


def seeded_generator(seed: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (an int; anything else: InputError)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


class Draws:
    """``count`` draws of ``shape`` (``"normal"``: N(0, 1), ``"uniform"``: U[0, 1)) from ``seed``.

    ``draws(j)`` gives draws ``j`` (a tensor of indices) as ``[len(j), *shape]``; each
    draw has a seed of its own taken from ``seed``, so it is generated when a chunk
    asks for it (memory: one chunk) and is the same in any chunk, batch or order.
    """

    def __init__(
        self,
        seed: object,
        count: int,
        shape: tuple[int, ...],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        kind: str = "normal",
    ) -> None:
        if kind not in ("normal", "uniform"):
            raise InputError(f"kind must be 'normal' or 'uniform', got {kind!r}")
        g = seeded_generator(seed)
        self.seeds = torch.randint(0, 2**62, (count,), generator=g).tolist()
        self.shape, self.device, self.dtype = tuple(shape), torch.device(device), dtype
        self.sample = torch.randn if kind == "normal" else torch.rand

    def one(self, j: int) -> torch.Tensor:
        """Draw ``j``, ``shape``."""
        g = torch.Generator(device=self.device).manual_seed(self.seeds[j])
        return self.sample(self.shape, generator=g, device=self.device, dtype=self.dtype)

    def __call__(self, j: torch.Tensor) -> torch.Tensor:
        unique, where = torch.unique(j, return_inverse=True)
        drawn = torch.stack([self.one(int(k)) for k in unique.tolist()])
        return drawn[where.to(drawn.device)]

"""RISE: randomized input sampling for explanation (Petsiuk et al. 2018, as in
eclique/RISE; paper 004's baseline).

Masks: a binary ``s x s`` grid with keep-probability ``p1``, bilinearly
upsampled to ``(s+1) * cell`` (``cell = ceil(H / s)``) and cropped at a random
shift in ``[0, cell)``. Saliency of class ``k``: ``sum_j P_k(x * M_j) M_j /
(N p1)`` with ``P`` the softmax probabilities. Grids and shifts are drawn once
(seeded, on the device); each chunk of masks x images upsamples its own few
masks once, so no ``[n_masks, H, W]`` tensor is ever held. Every class comes from the same
passes (``all_classes=True`` keeps them in ``extras``).
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
from ._perturb import generator, positive_float, positive_int
from .base import BATCH_SIZE, MEMORY, SEED, Method


def rise_masks(
    grids: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int], cell: tuple[int, int]
) -> torch.Tensor:
    """Soft masks ``[k,1,H,W]`` from binary ``grids`` ``[k,s,s]`` and ``shifts`` ``[k,2]``."""
    k, s, _ = grids.shape
    up = F.interpolate(
        grids[:, None],
        size=((s + 1) * cell[0], (s + 1) * cell[1]),
        mode="bilinear",
        align_corners=False,
    )
    rows = shifts[:, 0, None] + torch.arange(size[0], device=grids.device)[None]
    cols = shifts[:, 1, None] + torch.arange(size[1], device=grids.device)[None]
    batch = torch.arange(k, device=grids.device)[:, None, None]
    return up[batch, 0, rows[:, :, None], cols[:, None, :]][:, None]


@register
class Rise(Method):
    """RISE with ``n_masks`` (default 4000), ``s`` (grid size, 8), ``p1`` (0.5), ``seed``.

    Also ``all_classes`` (keep ``[N,K,H,W]`` saliency of every class in
    ``extras["all_classes"]``) and ``batch_size``. Masks are shared by the
    images of one call, as in the reference implementation.
    """

    hyperparameters = {
        "n_masks": Param("int", 4000, min=1),
        "s": Param("int", 8, min=1, help="mask grid cells per side"),
        "p1": Param("float", 0.5, min=0, max=1, open_min=True, help="share of kept cells"),
        "seed": SEED,
        "all_classes": Param("bool", False),
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }
    name = "rise"
    description = "RISE: probability-weighted sum of random upsampled grid masks"
    family = "Perturbation"

    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor, logits: torch.Tensor
    ) -> Explanation:
        p = self.params
        n_masks = positive_int("n_masks", p.get("n_masks", 4000))
        s = positive_int("s", p.get("s", 8))
        p1 = positive_float("p1", p.get("p1", 0.5))
        if p1 > 1:
            raise InputError(f"p1 is a keep-probability in (0, 1], got {p1}")
        all_classes = bool(p.get("all_classes", False))
        n, _c, h, w = inputs.shape
        k = logits.shape[1]
        device = inputs.device
        g = generator(device, p.get("seed", 0))
        cell = (-(-h // s), -(-w // s))
        grids = (torch.rand(n_masks, s, s, generator=g, device=device) < p1).to(inputs.dtype)
        shifts = torch.stack(
            [
                torch.randint(0, cell[0], (n_masks,), generator=g, device=device),
                torch.randint(0, cell[1], (n_masks,), generator=g, device=device),
            ],
            1,
        )
        saliency = torch.zeros(n, k if all_classes else 1, h * w, device=device)
        run = forward_runner(self.model, inputs)

        def accumulate(start: int, stop: int) -> torch.Tensor:
            # mask-major order: a chunk upsamples each of its few masks once for all images
            item = torch.arange(start, stop, device=device)
            j, img = item // n, item % n
            first, last = start // n, (stop - 1) // n
            unique = rise_masks(grids[first : last + 1], shifts[first : last + 1], (h, w), cell)
            masks = unique[j - first]
            probs = torch.softmax(run(inputs[img] * masks), dim=1)
            weights = probs if all_classes else probs.gather(1, target[img, None])
            saliency.index_add_(0, img, weights[:, :, None] * masks.flatten(1)[:, None, :])
            return weights.new_zeros(stop - start, 0)

        size = self.chunk(inputs, backward=False)
        run_chunked(accumulate, n * n_masks, size, desc="rise")
        saliency = (saliency / (n_masks * p1)).view(n, -1, h, w)
        if all_classes:
            maps = saliency.gather(1, target[:, None, None, None].expand(-1, 1, h, w))
            return self.explanation(maps, target, all_classes=saliency)
        return self.explanation(saliency, target)

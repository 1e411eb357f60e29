"""RISE: randomized input sampling for explanation (Petsiuk et al. 2018, as in
eclique/RISE; paper 004's baseline).

Masks: a binary ``s x s`` grid with keep-probability ``p1``, bilinearly
upsampled to ``(s+1) * cell`` (``cell = ceil(H / s)``) and cropped at a random
shift in ``[0, cell)``. Saliency of class ``k``: ``sum_j P_k(x * M_j) M_j /
(N p1)`` with ``P`` the softmax probabilities. Grids and shifts are drawn once
(seeded, on the device); each chunk of masks x images upsamples its own few
masks once, so no ``[n_masks, H, W]`` tensor is ever held. Every class comes from the same
passes (``all_classes=True`` keeps them in ``extras``).

Fewer passes (issue 33, item 5; opt-in, the paper's fixed count stays the default):

- ``tolerance``: masks are evaluated in blocks of ``block``; after each block
  (from the eighth on) the standard error of the running map is estimated from
  the block means (batch means: ``SE = sd(block maps) / sqrt(blocks)`` per
  pixel) and an image stops once the noise-to-signal ratio (root-mean-square SE
  over the map's own spread across pixels, noise removed;
  :func:`relative_standard_error`) is at most ``tolerance``; the map then
  correlates about ``1 / sqrt(1 + tolerance^2)`` with the converged one. Each image stops on its
  own, so its map does not depend on the other images of the call;
  ``extras["passes"]`` holds the masks spent per image.
- ``sampling="sobol"``: grid cells and shifts from a scrambled Sobol sequence
  (``torch.quasirandom.SobolEngine``, seeded) instead of independent draws.
- ``antithetic``: masks come in pairs ``m, 1 - m`` (same shift; needs
  ``p1 = 0.5`` so both halves keep half the cells).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..accel import forward_runner
from ..chunking import run_chunked
from ..errors import InputError
from ..params import Param
from ..seeding import seeded_generator
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
        "tolerance": Param(
            "float",
            None,
            min=0,
            max=1,
            open_min=True,
            none=True,
            help="stop at this noise-to-signal ratio of the map (None: all n_masks)",
        ),
        "block": Param("int", 64, min=2, help="masks per convergence check"),
        "sampling": Param("str", "random", choices=("random", "sobol")),
        "antithetic": Param("bool", False, help="masks in pairs m, 1 - m (p1 = 0.5)"),
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
        tolerance, block, sampling, antithetic = _adaptive(p, p1)
        cell = (-(-h // s), -(-w // s))
        if sampling == "random" and not antithetic:
            g = generator(device, p.get("seed", 0))
            grids = (torch.rand(n_masks, s, s, generator=g, device=device) < p1).to(inputs.dtype)
            shifts = torch.stack(
                [
                    torch.randint(0, cell[0], (n_masks,), generator=g, device=device),
                    torch.randint(0, cell[1], (n_masks,), generator=g, device=device),
                ],
                1,
            )
        else:
            grids, shifts = draw_masks(
                n_masks, s, p1, cell, p.get("seed", 0), sampling, antithetic, device
            )
            grids = grids.to(inputs.dtype)
        if tolerance is not None:
            return self._adaptive_run(
                inputs, target, k if all_classes else 1, grids, shifts, cell, p1, tolerance, block
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

    def _adaptive_run(self, inputs, target, classes, grids, shifts, cell, p1, tolerance, block):
        """Blocks of masks until each image's map has converged (module docstring)."""
        n, _c, h, w = inputs.shape
        device, n_masks = inputs.device, grids.shape[0]
        run = forward_runner(self.model, inputs)
        size = self.chunk(inputs, backward=False)
        total = torch.zeros(n, classes, h * w, device=device)
        sum_y = torch.zeros(n, h * w, dtype=torch.float64, device=device)
        sum_y2 = torch.zeros_like(sum_y)
        spent = torch.zeros(n, dtype=torch.long, device=device)
        active = torch.arange(n, device=device)
        blocks = 0
        for offset in range(0, n_masks, block):
            count = min(block, n_masks - offset)
            part = torch.zeros(len(active), classes, h * w, device=device)
            m_act = len(active)

            def accumulate(
                start: int, stop: int, offset=offset, part=part, m_act=m_act, active=active
            ):
                item = torch.arange(start, stop, device=device)
                j, slot = offset + item // m_act, item % m_act
                img = active[slot]
                first, last = int(j[0]), int(j[-1])
                unique = rise_masks(grids[first : last + 1], shifts[first : last + 1], (h, w), cell)
                masks = unique[j - first]
                probs = torch.softmax(run(inputs[img] * masks), dim=1)
                weights = probs if classes > 1 else probs.gather(1, target[img, None])
                part.index_add_(0, slot, weights[:, :, None] * masks.flatten(1)[:, None, :])
                return weights.new_zeros(stop - start, 0)

            run_chunked(accumulate, m_act * count, size, desc="rise")
            total[active] += part
            spent[active] += count
            blocks += 1
            mean_block = part.gather(
                1,
                (target[active] if classes > 1 else torch.zeros_like(active))[:, None, None].expand(
                    -1, 1, h * w
                ),
            )[:, 0].double() / (count * p1)
            sum_y[active] += mean_block
            sum_y2[active] += mean_block**2
            if blocks < _MIN_BLOCKS or offset + count >= n_masks:
                continue
            done = relative_standard_error(sum_y[active], sum_y2[active], blocks) <= tolerance
            active = active[~done]
            if len(active) == 0:
                break
        maps = (total / (spent[:, None, None] * p1)).view(n, classes, h, w)
        if classes > 1:
            picked = maps.gather(1, target[:, None, None, None].expand(-1, 1, h, w))
            return self.explanation(picked, target, all_classes=maps, passes=spent)
        return self.explanation(maps, target, passes=spent)


_MIN_BLOCKS = 8


def relative_standard_error(sum_y: torch.Tensor, sum_y2: torch.Tensor, blocks: int) -> torch.Tensor:
    """Per image ``[N]``: the noise-to-signal ratio of the running map. Noise: the
    root-mean-square over pixels of the batch-means standard error
    ``sqrt(var(block maps) / blocks)``; signal: the spread (standard deviation over
    pixels) the map would have without that noise, ``sqrt(var_pixels(mean) - noise^2)``.
    A map with ratio ``r`` correlates about ``1 / sqrt(1 + r^2)`` with the converged
    map. ``inf`` when no signal is left above the noise (0 for a map with neither).
    ``sum_y``/``sum_y2`` ``[N,P]`` sum the block maps and their squares over ``blocks``."""
    mean = sum_y / blocks
    var = ((sum_y2 - blocks * mean**2) / (blocks - 1)).clamp_min(0)
    noise2 = (var / blocks).mean(1)
    signal2 = (mean.var(1, unbiased=False) - noise2).clamp_min(0)
    ratio = (noise2 / signal2.clamp_min(1e-300)).sqrt()
    flat = torch.where(noise2 > 0, torch.inf, 0.0).to(ratio.dtype)
    return torch.where(signal2 > 0, ratio, flat)


def draw_masks(
    n_masks: int,
    s: int,
    p1: float,
    cell: tuple[int, int],
    seed: object,
    sampling: str,
    antithetic: bool,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grids ``[n_masks,s,s]`` (0/1) and shifts ``[n_masks,2]`` from ``seed``: uniform
    points (``"random"``, or a scrambled Sobol sequence, ``"sobol"``) in
    ``[0,1)^(s*s+2)``: cell kept when below ``p1``, shift ``floor(u * cell)``. With
    ``antithetic`` half as many points are drawn and mask ``2i+1`` is ``1 - mask 2i``."""
    points = -(-n_masks // 2) if antithetic else n_masks
    dims = s * s + 2
    if sampling == "sobol":
        if dims > torch.quasirandom.SobolEngine.MAXDIM:
            raise InputError(f"sampling='sobol' allows s up to 145, got s={s}")
        u = torch.quasirandom.SobolEngine(dims, scramble=True, seed=seeded_int(seed)).draw(points)
    else:
        u = torch.rand(points, dims, generator=generator(torch.device("cpu"), seed))
    u = u.to(device=device, dtype=torch.float64)
    grids = (u[:, : s * s] < p1).view(points, s, s).float()
    limit = torch.tensor(cell, device=device)
    shifts = torch.minimum((u[:, s * s :] * limit).long(), limit - 1)
    if antithetic:
        grids = torch.stack([grids, 1 - grids], 1).flatten(0, 1)[:n_masks]
        shifts = shifts.repeat_interleave(2, 0)[:n_masks]
    return grids, shifts


def seeded_int(seed: object) -> int:
    """``seed`` checked as an int (the seeded generator's rule)."""
    seeded_generator(seed)
    return int(seed)


def _adaptive(p: dict, p1: float) -> tuple[float | None, int, str, bool]:
    tolerance = p.get("tolerance")
    if tolerance is not None:
        tolerance = positive_float("tolerance", tolerance)
        if tolerance >= 1:
            raise InputError(f"tolerance is a noise-to-signal ratio in (0, 1), got {tolerance}")
    block = positive_int("block", p.get("block", 64))
    if block < 2:
        raise InputError(f"block must hold at least 2 masks, got {block}")
    sampling = p.get("sampling", "random")
    if sampling not in ("random", "sobol"):
        raise InputError(f"sampling must be 'random' or 'sobol', got {sampling!r}")
    antithetic = bool(p.get("antithetic", False))
    if antithetic and p1 != 0.5:
        raise InputError(f"antithetic masks (m, 1 - m) need p1 = 0.5, got p1 = {p1}")
    if antithetic and block % 2:
        raise InputError(f"antithetic masks need an even block, got block = {block}")
    return tolerance, block, sampling, antithetic

"""Degradation test, MoRF / LeRF (Schulz et al., IBA, ICLR 2020; used by DRIB, paper 000).

The image is cut into square tiles; a tile's relevance is the mean of the
map inside it. Most-relevant-first (MoRF) replaces tiles in descending
relevance order, least-relevant-first (LeRF) in ascending order, each with
the image's per-channel mean (normalised space). The target probability is
read at ``fractions`` evenly spaced fractions of replaced tiles (100 by
default, 0 and 1 included; ``round(f T)`` tiles of ``T``; fractions that
round to the same count share one forward). The value per
image is ``mean_t [LeRF(t) - MoRF(t)]`` (higher is better: removing the
relevant tiles first hurts more); ``extras["decline"]`` is DRIB's "decline of
the target score", ``MoRF(0) - mean_t MoRF(t)``.

Tile sizes: 8x8 and 14x14 on 224x224 as in the papers; smaller images use
:func:`default_tiles` (2x2 and 4x4 on 32x32). Tiles at the border may be
partial when the side is not a multiple of the tile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..accel import forward_runner
from ..attribution.base import resolve_target
from ..chunking import chunk_size, run_chunked
from ..errors import InputError
from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import Param
from ..placement import model_device
from ._common import as_maps, check_inputs, check_model, class_score, scaled
from .causal import FILL, SCORE, _baseline
from .registry import Metric, Scoring, register
from .result import Result

PARAMS = {
    "tile": Param("int", None, min=1, none=True, help="tile side; none: default_tiles"),
    "fractions": Param("int|tensor", 100, min=2, help="a count >= 2 or a tensor in [0, 1]"),
    "baseline": FILL,
    "score": SCORE,
}


def default_tiles(size: int) -> tuple[int, int]:
    """(small, large) tile sides: IBA's 8 and 14 at 224, scaled, at least 2 and 4 (32 -> 2, 4)."""
    return scaled(8, size, minimum=2), scaled(14, size, minimum=4)


def tile_rank(maps: torch.Tensor, tile: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-pixel tile rank ``[N,HW]`` (0 = most relevant tile), tile index per pixel, tile count."""
    n, _, h, w = maps.shape
    relevance = F.avg_pool2d(maps, tile, stride=tile, ceil_mode=True)  # [N,1,th,tw]
    th, tw = relevance.shape[2:]
    flat = relevance.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=maps.device).expand_as(order))
    rows = torch.arange(h, device=maps.device) // tile
    cols = torch.arange(w, device=maps.device) // tile
    pixel_tile = (rows[:, None] * tw + cols[None, :]).flatten()  # [HW]
    return rank[:, pixel_tile], pixel_tile, th * tw


@with_autograd
def degradation(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    tile: int | None = None,
    fractions: int | torch.Tensor = 100,
    baseline="mean",
    score: str = "probability",
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> Result:
    """MoRF / LeRF degradation with square tiles; value ``mean_t [LeRF(t) - MoRF(t)]``.

    ``tile`` default: the small tile of :func:`default_tiles` (8 at 224, 2 at
    32). ``fractions``: a count of evenly spaced fractions in ``[0, 1]`` or a
    1-D tensor of fractions. ``curves`` are the MoRF curves ``[N,S]``;
    ``extras`` hold ``morf``, ``lerf``, ``decline`` and ``target``.
    """
    model = check_model(model)
    inputs = check_inputs(inputs, model).to(model_device(model))
    maps = as_maps(maps, like=inputs)
    n, _c, h, w = inputs.shape
    tile = default_tiles(min(h, w))[0] if tile is None else int(tile)
    if tile < 1 or tile > max(h, w):
        raise InputError(f"tile must be between 1 and the image side {max(h, w)}, got {tile}")
    if isinstance(fractions, int):
        if fractions < 2:
            raise InputError(f"fractions must be at least 2, got {fractions}")
        frac = torch.linspace(0, 1, fractions)
    else:
        frac = torch.as_tensor(fractions, dtype=torch.float32).flatten()
        if frac.numel() < 1 or frac.min() < 0 or frac.max() > 1:
            raise InputError("fractions must lie in [0, 1]")
    rank, _pixel_tile, n_tiles = tile_rank(maps, tile)
    all_counts = torch.round(frac.double() * n_tiles).long().to(inputs.device)  # [S]
    # Fractions that round to the same tile count share one forward (small images).
    counts, inverse = torch.unique(all_counts, return_inverse=True)
    s = counts.numel()
    per_image = 2 * s
    with frozen(model):
        target, _ = resolve_target(model, inputs, target)
        fill = _baseline(inputs, baseline)
        size = chunk_size(model, inputs, backward=False, batch_size=batch_size, memory=memory)
        run_model = forward_runner(model, inputs)

        def run(a: int, b: int) -> torch.Tensor:
            j = torch.arange(a, b, device=inputs.device)
            img, rest = j // per_image, j % per_image
            lerf, k = rest // s, counts[rest % s]
            r = rank[img]
            morf_mask = r < k[:, None]
            lerf_mask = r >= (n_tiles - k)[:, None]
            mask = torch.where(lerf[:, None].bool(), lerf_mask, morf_mask).view(-1, 1, h, w)
            x = torch.where(mask, fill[img], inputs[img])
            return class_score(run_model(x), target[img], score).float()

        out = run_chunked(run, n * per_image, size, desc=desc).view(n, 2, s)[:, :, inverse]
    morf, lerf = out[:, 0], out[:, 1]
    return Result(
        metric="degradation",
        values=(lerf - morf).mean(1),
        curves=morf,
        x=frac,
        params={
            "tile": tile,
            "fractions": int(all_counts.numel()),
            "baseline": baseline if isinstance(baseline, str) else "custom",
            "score": score,
        },
        extras={"morf": morf, "lerf": lerf, "decline": morf[:, 0] - morf.mean(1), "target": target},
        higher_is_better=True,
    )


def _score(size: str):
    def score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
        small, large = default_tiles(min(s.x.shape[2:]))
        settings.setdefault("tile", small if size == "small" else large)
        r = degradation(
            s.model, s.x, s.maps, s.target, batch_size=s.batch_size, memory=s.memory, **settings
        )
        return {"values": r.values, "curve_morf": r.extras["morf"], "curve_lerf": r.extras["lerf"]}

    return score


for _size, _tiles, _order in (("small", "8x8", 30), ("large", "14x14", 40)):
    register(
        Metric(
            f"degradation-{_size}", f"mean LeRF - MoRF, {_size} tiles ({_tiles} at 224)",
            _score(_size), kind="curve", params=PARAMS, order=_order,
            family="faithfulness",
            curves={
                "-morf": (f"MoRF, {_size} tiles", "fraction of tiles replaced"),
                "-lerf": (f"LeRF, {_size} tiles", "fraction of tiles replaced"),
            },
        )
    )  # fmt: skip

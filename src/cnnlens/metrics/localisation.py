"""Localisation metrics: bounding-box score, pointing game, energy pointing game.

They compare a map with ground truth and need no model (``model=None`` and
``inputs=None`` are accepted). Ground truth is ``boxes`` ``[N,4]`` inclusive
pixel coordinates ``(x0, y0, x1, y1)`` or ``masks`` ``[N,1,H,W]`` bool.

- Bounding-box score (IBA, Schulz et al. 2020; DRIB's "Bbox = k/n"): with
  ``n`` pixels inside the ground truth, the share of the ``n`` highest map
  pixels that fall inside it.
- Pointing game (Zhang et al. 2016, "Top-down neural attention"): a hit when
  the map's maximum lies within ``tolerance`` pixels of the object (15 px at
  224x224, scaled: 2 px at 32x32).
- Energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the
  positive map energy inside the object.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..params import Param
from ._common import as_maps, descending_rank, scaled
from .registry import Metric, Scoring, register
from .result import Result

BBOX_PARAMS = {"max_area": Param("float", None, min=0, max=1, open_min=True, none=True)}
POINTING_PARAMS = {"tolerance": Param("int", None, min=0, none=True, help="pixels")}
ENERGY_PARAMS: dict[str, Param] = {}


def object_masks(
    maps: torch.Tensor,
    *,
    boxes: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ground truth as bool ``[N,1,H,W]`` on the maps' device, from ``boxes`` or ``masks``."""
    n, _, h, w = maps.shape
    if (boxes is None) == (masks is None):
        raise InputError("give exactly one of boxes= [N,4] (x0,y0,x1,y1 inclusive) or masks=")
    if masks is not None:
        masks = torch.as_tensor(masks)
        if masks.dim() == 3:
            masks = masks[:, None]
        if tuple(masks.shape) != (n, 1, h, w):
            raise InputError(
                f"masks must be [{n},1,{h},{w}] like the maps, got {tuple(masks.shape)}"
            )
        return masks.to(maps.device).bool()
    boxes = torch.as_tensor(boxes).to(maps.device)
    if boxes.dim() != 2 or tuple(boxes.shape) != (n, 4):
        raise InputError(
            f"boxes must be [{n},4] (x0, y0, x1, y1 inclusive), got {tuple(boxes.shape)}"
        )
    boxes = boxes.long()
    x0, y0, x1, y1 = boxes.unbind(1)
    if bool(((x1 < x0) | (y1 < y0)).any()):
        raise InputError("boxes need x1 >= x0 and y1 >= y0 (inclusive corners)")
    ys = torch.arange(h, device=maps.device)[None, :, None]
    xs = torch.arange(w, device=maps.device)[None, None, :]
    inside = (
        (xs >= x0[:, None, None])
        & (xs <= x1[:, None, None])
        & (ys >= y0[:, None, None])
        & (ys <= y1[:, None, None])
    )
    return inside[:, None]


def bbox_score(
    model=None,
    inputs=None,
    maps=None,
    target=None,
    *,
    boxes: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    max_area: float | None = None,
) -> Result:
    """Share of the top-``n`` map pixels inside the ground truth of ``n`` pixels.

    ``max_area`` (IBA used 0.33): images whose ground truth covers more than
    that share of the image get NaN (left out of the mean).
    """
    maps = as_maps(maps)
    gt = object_masks(maps, boxes=boxes, masks=masks)
    flat_gt = gt.flatten(1)
    area = flat_gt.sum(1)
    rank = descending_rank(maps)
    hits = ((rank < area[:, None]) & flat_gt).sum(1).float()
    values = hits / area.clamp_min(1).float()
    values = torch.where(area > 0, values, torch.full_like(values, float("nan")))
    if max_area is not None:
        share = area.float() / flat_gt.shape[1]
        values = torch.where(share <= max_area, values, torch.full_like(values, float("nan")))
    return Result("bbox_score", values, params={"max_area": max_area}, extras={"area": area})


def _disk(radius: int, device) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()


def pointing_game(
    model=None,
    inputs=None,
    maps=None,
    target=None,
    *,
    boxes: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    tolerance: int | None = None,
) -> Result:
    """1 when the map's maximum lies within ``tolerance`` pixels of the object, else 0.

    ``tolerance`` default: 15 px at 224x224 scaled to the image side (2 at
    32). Ties for the maximum: the first pixel in raster order counts.
    """
    maps = as_maps(maps)
    gt = object_masks(maps, boxes=boxes, masks=masks)
    n, _, h, w = maps.shape
    tol = scaled(15, min(h, w), minimum=0) if tolerance is None else int(tolerance)
    if tol < 0:
        raise InputError(f"tolerance must be >= 0 pixels, got {tol}")
    if tol > 0:
        kern = _disk(tol, maps.device)[None, None]
        grown = F.conv2d(gt.float(), kern, padding=tol) > 0
    else:
        grown = gt
    peak = maps.flatten(1).argmax(1)
    hits = grown.flatten(1).gather(1, peak[:, None])[:, 0].float()
    return Result("pointing_game", hits, params={"tolerance": tol}, extras={"peak": peak})


def energy_pointing_game(
    model=None,
    inputs=None,
    maps=None,
    target=None,
    *,
    boxes: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
) -> Result:
    """Share of positive map energy inside the object: ``sum(relu(m) gt) / sum(relu(m))``.

    A map with no positive value scores NaN.
    """
    maps = as_maps(maps)
    gt = object_masks(maps, boxes=boxes, masks=masks)
    pos = maps.clamp_min(0).flatten(1)
    total = pos.sum(1)
    inside = (pos * gt.flatten(1)).sum(1)
    values = torch.where(
        total > 0, inside / total.clamp_min(1e-30), torch.full_like(total, float("nan"))
    )
    return Result("energy_pointing_game", values)


def _score(f, boxes_first: bool):
    def score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
        if boxes_first and s.boxes is not None:
            truth = {"boxes": s.boxes}
        else:
            truth = {"masks": s.masks} if s.masks is not None else {"boxes": s.boxes}
        return {"values": f(None, None, s.maps, **truth, **settings).values}

    return score


for _name, _f, _text, _params, _order in (
    ("bbox-score", bbox_score, "share of the top-n pixels inside the box", BBOX_PARAMS, 50),
    ("pointing-game", pointing_game, "map maximum on the object (with tolerance)",
     POINTING_PARAMS, 60),
    ("energy-pointing-game", energy_pointing_game, "share of positive energy on the object",
     ENERGY_PARAMS, 70),
):  # fmt: skip
    register(
        Metric(
            _name, _text, _score(_f, _name == "bbox-score"), needs=("ground-truth",),
            params=_params, order=_order,
            family="localisation",
        )
    )  # fmt: skip

"""Attribution from a gated model, compared (paper 000, Table 5).

IBA at a gated layer of the gated model against SmoothGrad, Grad-CAM and
Guided Grad-CAM on the same images and targets: degradation (the decline of
the target score, MoRF, with IBA's 8x8 and 14x14 tiles at 224 scaled to the
image, :func:`cnnlens.metrics.default_tiles`) and the bounding-box score
(:func:`cnnlens.metrics.bbox_score`; needs boxes, e.g. ``shapes``).
"""

from __future__ import annotations

import torch
from torch import nn

from ...attribution import explain
from ...attribution.bottleneck import estimate_statistics
from ...errors import InputError
from ...metrics import bbox_score, default_tiles, degradation
from .gate import gated_layers

METHODS = ("iba", "smoothgrad", "grad-cam", "guided-grad-cam")


def attribution_table(
    model: nn.Module,
    images: torch.Tensor,
    *,
    boxes: torch.Tensor | None,
    statistics_images: torch.Tensor,
    layer: str | None = None,
    target: torch.Tensor | None = None,
    smoothgrad_samples: int = 16,
    iba_steps: int = 10,
    iba_samples: int = 4,
    fractions: int = 20,
    seed: int = 0,
) -> list[dict]:
    """One row per method: degradation decline and LeRF-MoRF at both tiles, bbox score.

    ``layer``: the gated layer IBA reads (default: the last gated layer).
    ``boxes`` ``[N,4]`` or ``None`` (no bbox column).
    """
    gates = gated_layers(model)
    layer = layer or list(gates)[-1]
    if layer not in gates:
        raise InputError(f"{layer!r} is not a gated layer; gated layers: {list(gates)}")
    model.eval()
    if target is None:
        with torch.no_grad():
            target = model(images).argmax(1)
    stats = estimate_statistics(model, layer, statistics_images)
    settings = {
        "iba": {"layer": layer, "statistics": stats, "steps": iba_steps, "samples": iba_samples},
        "smoothgrad": {"samples": smoothgrad_samples},
        "grad-cam": {},
        "guided-grad-cam": {},
    }
    small, large = default_tiles(min(images.shape[-2:]))
    rows = []
    for method in METHODS:
        kw = dict(settings[method])
        if method in ("iba", "smoothgrad"):
            kw["seed"] = seed
        maps = explain(model, images, method, target=target, **kw).maps
        row: dict = {"method": method}
        for tile in (small, large):
            r = degradation(model, images, maps, target, tile=tile, fractions=fractions)
            row[f"decline {tile}x{tile}"] = float(r.extras["decline"].mean())
            row[f"LeRF-MoRF {tile}x{tile}"] = r.mean
        if boxes is not None:
            row["bbox"] = bbox_score(maps=maps, boxes=boxes).mean
        rows.append(row)
    return rows

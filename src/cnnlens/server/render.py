"""Pictures the explorer sends: images and attribution maps as PNG bytes.

A map becomes an RGBA picture meant to lie over its image: non-negative maps go from
transparent to yellow / red with their value (scaled by the 99.5th percentile of the
magnitude, so one hot pixel does not wash out the rest); signed maps use red for
positive and blue for negative evidence. The page sets the overlay's opacity.
"""

from __future__ import annotations

import io

import numpy as np


def png(pixels: np.ndarray) -> bytes:
    """uint8 ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` -> PNG bytes."""
    from PIL import Image

    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def scaled(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """``values`` divided by their robust magnitude, in [-1, 1]; and whether they are signed."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float32))
    signed = bool((v < 0).any() and (v > 0).any())
    if not signed and (v <= 0).all():
        v = -v  # a map that is all non-positive reads as magnitude
    scale = float(np.percentile(np.abs(v), 99.5)) if v.size else 0.0
    if scale <= 0:
        scale = float(np.abs(v).max()) if v.size else 0.0
    out = np.clip(v / scale, -1, 1) if scale > 0 else np.zeros_like(v)
    return out, signed


def overlay(values: np.ndarray) -> np.ndarray:
    """A map ``[H, W]`` as uint8 RGBA ``[H, W, 4]`` (alpha grows with the magnitude)."""
    s, signed = scaled(values)
    rgba = np.zeros((*s.shape, 4), dtype=np.float32)
    pos = np.clip(s, 0, 1)
    if signed:
        neg = np.clip(-s, 0, 1)
        rgba[..., 0] = np.where(pos > 0, 1.0, 0.15)
        rgba[..., 1] = 0.2 * (1 - np.maximum(pos, neg))
        rgba[..., 2] = np.where(neg > 0, 1.0, 0.15)
        rgba[..., 3] = np.maximum(pos, neg)
    else:  # transparent -> red -> yellow
        rgba[..., 0] = 1.0
        rgba[..., 1] = pos
        rgba[..., 2] = 0.0
        rgba[..., 3] = np.sqrt(pos)
    return (rgba * 255 + 0.5).astype(np.uint8)


def map_png(values: np.ndarray) -> bytes:
    return png(overlay(values))

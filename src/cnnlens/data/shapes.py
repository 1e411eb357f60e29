"""``shapes``: procedurally drawn geometric objects on cluttered backgrounds.

An offline data set with ground truth for every question cnnlens asks of a
model: a class label, the object's binary mask, its bounding box and ten
binary attributes. Nothing is downloaded or read from disk; every image is a
pure function of ``(seed, split, index)``.

Each image holds one object of one of eight classes (circle, square,
triangle, cross, star, crescent, heart, arrow) at a random position, scale,
rotation and colour, filled or outlined, plain or striped, on a textured
background with distractor strokes. Background, strokes, colour, size,
position and style are drawn independently of the class, so **the background
carries no class information**: :meth:`ShapesDataset.without_object` renders
the same images with the object left out, and a trained model must fall to
chance on them (``tests/test_shapes.py`` checks this).

Attributes (``attribute_names``):

- ``red``, ``green``, ``blue``: the object's hue bin. Correlated by
  construction: at most one is true (the hue can also fall in the
  yellow / cyan / magenta bins, then none is).
- ``warm``: hue in the red, yellow or magenta bins. Correlated by
  construction with ``red`` (red implies warm) and with ``green`` and
  ``blue`` (each implies not warm).
- ``large``: the object's radius is above the middle of its range.
- ``left``, ``top``: the object's centre lies in the left / top half.
- ``filled``: filled (else outlined).
- ``striped``: a filled object with stripes. Correlated by construction with
  ``filled`` (outlined objects are never striped).
- ``bright``: the object's colour value is above the middle of its range.

``large``, ``left``, ``top``, ``filled`` and ``bright`` are independent of
each other, of the class and of the colour.

Splits (fixed): ``train`` 10,000 images, ``val`` 1,000, ``test`` 2,000; size
32x32 by default (any size >= 16 works, e.g. 64 or 224).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..errors import DataError
from . import register
from .base import TensorDataset

CLASSES = ["circle", "square", "triangle", "cross", "star", "crescent", "heart", "arrow"]
ATTRIBUTES = [
    "red",
    "green",
    "blue",
    "warm",
    "large",
    "left",
    "top",
    "filled",
    "striped",
    "bright",
]
SPLIT_SIZES = {"train": 10_000, "val": 1_000, "test": 2_000}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
# Radius of the object's bounding circle as a fraction of the image side.
RADIUS_RANGE = (0.2, 0.34)
SUPERSAMPLE = 3


def _regular_polygon(n: int, radius: float = 1.0, phase: float = math.pi / 2) -> np.ndarray:
    a = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], 1)


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.45) -> np.ndarray:
    a = math.pi / 2 + math.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


_POLYGONS = {
    "square": np.array([[-0.72, -0.72], [0.72, -0.72], [0.72, 0.72], [-0.72, 0.72]]),
    "triangle": _regular_polygon(3, 1.0),
    "cross": np.array(
        [
            [-0.3, -0.95],
            [0.3, -0.95],
            [0.3, -0.3],
            [0.95, -0.3],
            [0.95, 0.3],
            [0.3, 0.3],
            [0.3, 0.95],
            [-0.3, 0.95],
            [-0.3, 0.3],
            [-0.95, 0.3],
            [-0.95, -0.3],
            [-0.3, -0.3],
        ]
    ),
    "star": _star(),
    "arrow": np.array(
        [
            [-0.95, -0.22],
            [0.15, -0.22],
            [0.15, -0.65],
            [0.98, 0.0],
            [0.15, 0.65],
            [0.15, 0.22],
            [-0.95, 0.22],
        ]
    ),
}


def _inside(shape: str, u: np.ndarray, v: np.ndarray, shrink: float = 1.0) -> np.ndarray:
    """Membership of object-frame points (u, v) in ``shape`` scaled by ``shrink``."""
    u, v = u / shrink, v / shrink
    if shape == "circle":
        return u * u + v * v <= 0.9**2
    if shape == "crescent":
        return (u * u + v * v <= 0.95**2) & ((u - 0.45) ** 2 + v * v > 0.72**2)
    if shape == "heart":
        x, y = u * 1.25, v * 1.25 + 0.15
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    from matplotlib.path import Path as PolygonPath  # only when drawing: a heavy import

    path = PolygonPath(_POLYGONS[shape])
    pts = np.stack([u.ravel(), v.ravel()], 1)
    return path.contains_points(pts).reshape(u.shape)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _hue_bin(h: float) -> int:
    """0 red, 1 yellow, 2 green, 3 cyan, 4 blue, 5 magenta."""
    return int(((h + 1 / 12) % 1.0) * 6)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth coloured noise plus a grating: texture with no class information."""
    coarse = rng.uniform(0, 1, (3, 5, 5))
    t = torch.from_numpy(coarse)[None].float()
    smooth = torch.nn.functional.interpolate(
        t, size=(size, size), mode="bicubic", align_corners=True
    )
    smooth = smooth[0].numpy()
    base = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.65))
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle, freq = rng.uniform(0, math.pi), rng.uniform(3, 9)
    grating = np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)))
    image = base[:, None, None] + 0.25 * (smooth - 0.5) + 0.06 * grating[None]
    image += rng.normal(0, 0.03, image.shape)
    return image


def _strokes(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Draw ``count`` thin random line segments (distractors) in place."""
    size = image.shape[-1]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for _ in range(count):
        x0, y0 = rng.uniform(0, size, 2)
        angle, length = rng.uniform(0, 2 * math.pi), rng.uniform(0.25, 0.6) * size
        dx, dy = math.cos(angle), math.sin(angle)
        px, py = xx - x0, yy - y0
        along = np.clip(px * dx + py * dy, 0, length)
        dist = np.hypot(px - along * dx, py - along * dy)
        width = rng.uniform(0.5, 1.1) * size / 32
        alpha = np.clip(width - dist + 0.5, 0, 1)[None]
        colour = _hsv_to_rgb(rng.uniform(), rng.uniform(0.2, 0.9), rng.uniform(0.2, 1.0))
        image[:] = image * (1 - alpha) + colour[:, None, None] * alpha


def render(seed: int, split: str, index: int, size: int = 32, *, with_object: bool = True):
    """Draw one image; returns ``(image [3,S,S] float in [0,1], label, mask [S,S], attributes)``."""
    # Two streams: the object's parameters do not depend on the image size, so
    # the same index shows the same object at 32, 64 or 224 pixels.
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index, 0])
    image = _background(rng, size)
    _strokes(rng, image, int(rng.integers(2, 5)))

    obj = np.random.default_rng([seed, _SPLIT_IDS[split], index, 1])
    label = int(obj.integers(len(CLASSES)))
    radius_frac = obj.uniform(*RADIUS_RANGE)
    radius = radius_frac * size
    cx, cy = obj.uniform(radius_frac, 1 - radius_frac, 2) * size
    angle = obj.uniform(0, 2 * math.pi)
    hue, sat, val = obj.uniform(), obj.uniform(0.75, 1.0), obj.uniform(0.55, 1.0)
    filled = bool(obj.uniform() < 0.5)
    striped = filled and bool(obj.uniform() < 0.5)
    stripe_angle, stripe_period = obj.uniform(0, math.pi), obj.uniform(0.45, 0.7)

    # Supersampled object coverage in the object's own frame.
    k = SUPERSAMPLE
    grid = (np.arange(size * k) + 0.5) / k
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    ca, sa = math.cos(angle), math.sin(angle)
    u = ((xx - cx) * ca + (yy - cy) * sa) / radius
    v = (-(xx - cx) * sa + (yy - cy) * ca) / radius
    shape = CLASSES[label]
    inside = _inside(shape, u, v)
    if not filled:
        thickness = max(0.28, 2.0 / radius)
        inside &= ~_inside(shape, u, v, shrink=1.0 - thickness)
    coverage = inside.reshape(size, k, size, k).mean(axis=(1, 3))
    colour = _hsv_to_rgb(hue, sat, val)
    paint = np.broadcast_to(colour[:, None, None], (3, size, size)).copy()
    if striped:
        phase = (u * math.cos(stripe_angle) + v * math.sin(stripe_angle)) / stripe_period
        dark = (np.floor(phase) % 2 == 0).reshape(size, k, size, k).mean(axis=(1, 3))
        paint *= 1 - 0.55 * dark[None]
    if with_object:
        image = image * (1 - coverage[None]) + paint * coverage[None]
    mask = coverage >= 0.5

    hue_bin = _hue_bin(hue)
    attributes = np.array(
        [
            hue_bin == 0,
            hue_bin == 2,
            hue_bin == 4,
            hue_bin in (0, 1, 5),
            radius_frac > sum(RADIUS_RANGE) / 2,
            cx < size / 2,
            cy < size / 2,
            filled,
            striped,
            val > 0.775,
        ],
        dtype=bool,
    )
    return np.clip(image, 0, 1).astype(np.float32), label, mask, attributes


def _box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


@functools.lru_cache(maxsize=8)
def _generate(seed: int, split: str, size: int, n: int, with_object: bool):
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    masks = np.empty((n, 1, size, size), dtype=bool)
    attributes = np.empty((n, len(ATTRIBUTES)), dtype=bool)
    boxes = np.empty((n, 4), dtype=np.int64)
    for i in range(n):
        image, label, mask, attrs = render(seed, split, i, size, with_object=with_object)
        images[i] = np.round(image * 255).astype(np.uint8)
        labels[i], masks[i, 0], attributes[i] = label, mask, attrs
        boxes[i] = _box(mask)
    return tuple(torch.from_numpy(a) for a in (images, labels, masks, attributes, boxes))


class ShapesDataset(TensorDataset):
    """The ``shapes`` data set of one split (see the module docstring)."""

    def __init__(
        self,
        split: str = "train",
        *,
        size: int = 32,
        seed: int = 0,
        n: int | None = None,
        with_object: bool = True,
    ) -> None:
        if split not in SPLIT_SIZES:
            raise DataError(f"shapes has splits {sorted(SPLIT_SIZES)}, not {split!r}")
        if size < 16:
            raise DataError(f"shapes needs size >= 16 to keep classes distinguishable, got {size}")
        count = SPLIT_SIZES[split] if n is None else int(n)
        if count < 1:
            raise DataError(f"shapes: n must be >= 1, got {count}")
        images, labels, masks, attributes, boxes = _generate(seed, split, size, count, with_object)
        super().__init__(
            images,
            labels,
            classes=CLASSES,
            # Fixed normalisation so every split and the object-free variant
            # share it (measured on 10,000 training images at 32 px).
            mean=(0.4292, 0.4295, 0.4303),
            std=(0.1565, 0.1572, 0.1575),
            boxes=boxes,
            masks=masks,
            attributes=attributes,
            attribute_names=ATTRIBUTES,
            name="shapes",
        )
        self.split, self.size, self.seed = split, size, seed

    def without_object(self) -> ShapesDataset:
        """The same images with the object left out (background and strokes only)."""
        return ShapesDataset(
            self.split, size=self.size, seed=self.seed, n=len(self), with_object=False
        )


@register("shapes", "procedural shapes on clutter, with masks, boxes, attributes (offline)")
def load_shapes(
    split: str = "train",
    *,
    size: int = 32,
    seed: int = 0,
    n: int | None = None,
    with_object: bool = True,
) -> ShapesDataset:
    # the options named, so cnnlens.data.loader_options sees them (a model card's size, n)
    return ShapesDataset(split, size=size, seed=seed, n=n, with_object=with_object)


load_shapes.split_sizes = SPLIT_SIZES  # read by cnnlens.data.split_size

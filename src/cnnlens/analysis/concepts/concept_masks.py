"""Per-pixel concept annotations for network dissection: a mask of each concept in each image.

Bau et al. 2017 ("Network Dissection", CVPR) score a channel against human concepts
annotated pixel by pixel (Broden: objects, parts, materials, colours, textures,
scenes). :class:`ConceptMasks` holds such annotations for the images of a data set,
built on demand one batch at a time, so a large data set never needs all its masks
in memory:

- :meth:`ConceptMasks.from_dataset`: from the ground truth of a data set with object
  masks (``shapes``; any :class:`~cnnlens.data.base.ImageDataset` with ``masks``):

  * ``"object"``: the object's mask, in every image;
  * ``"background"``: every pixel outside the object's mask;
  * ``"class=<name>"``: the object's mask in the images of that class (empty in the
    others) — the class as a concept, Broden's "object" category;
  * ``"<attribute>"`` or ``"<attribute>=1"``: the object's mask in the images where the
    attribute holds; ``"<attribute>=0"``: where it does not. Every attribute of
    ``shapes`` describes the object (its colour: ``red``, ``green``, ``blue``, ``warm``,
    ``bright``; its size ``large``; its style ``filled``, ``striped``; its position
    ``left``, ``top``), so its region is the object: a ``striped`` detector is a channel
    that fires on striped objects and not on plain ones, the analogue of Broden's
    colour and texture concepts.

  The default: ``object``, ``background``, every class and every attribute.
- :meth:`ConceptMasks.from_tensor`: a user's masks ``[N, C, H, W]`` (bool or 0/1) with
  one name per concept.

Every image counts as annotated for every concept: a concept absent from an image
has an empty mask there, so a channel that fires on it pays in the union (Bau et
al. sum over the images annotated in the concept's category; here every image is).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ...data.adapt import as_dataset
from ...data.base import ImageDataset
from ...errors import DataError, InputError
from .concept_sets import CLASS_PREFIX, _matches

OBJECT = "object"
BACKGROUND = "background"


@dataclass(frozen=True, eq=False)
class ConceptMasks:
    """The masks of ``names`` in each of ``n`` images, ``size = (H, W)``; :meth:`masks`
    builds them for a batch of images."""

    names: list[str]
    n: int
    size: tuple[int, int]
    build: Callable[[torch.Tensor], torch.Tensor]  # long indices [b] -> bool [b, C, H, W]

    def __len__(self) -> int:
        return self.n

    def masks(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Bool ``[b, C, H, W]`` masks of every concept in images ``indices``."""
        idx = torch.as_tensor(indices, dtype=torch.long).flatten()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
            raise InputError(f"image indices must lie in [0, {self.n}), got {idx.tolist()[:8]}")
        return self.build(idx)

    @classmethod
    def from_tensor(cls, masks: torch.Tensor, names: Sequence[str] | None = None) -> ConceptMasks:
        """A user's masks ``[N, C, H, W]`` (bool, or numbers where nonzero = inside) of
        ``C`` concepts named ``names`` (default ``"concept_0"`` ...)."""
        if not isinstance(masks, torch.Tensor) or masks.dim() != 4:
            shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
            raise DataError(f"concept masks must be a tensor [N, C, H, W], got {shape}")
        if masks.shape[0] == 0 or masks.shape[1] == 0:
            raise DataError(f"concept masks {tuple(masks.shape)} hold no image or no concept")
        names = [f"concept_{i}" for i in range(masks.shape[1])] if names is None else list(names)
        _check_names(names, masks.shape[1])
        held = masks if masks.dtype == torch.bool else masks != 0
        return cls(names, int(masks.shape[0]), tuple(masks.shape[-2:]), lambda idx: held[idx])

    @classmethod
    def from_mapping(cls, masks: Mapping[str, torch.Tensor]) -> ConceptMasks:
        """``{name: masks [N, H, W]}``, one mask per image for each concept."""
        if not masks:
            raise DataError("no concept masks given; name at least one concept")
        tensors = []
        for name, value in masks.items():
            if not isinstance(value, torch.Tensor) or value.dim() not in (3, 4):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise DataError(f"concept {name!r}: masks must be a tensor [N, H, W], got {shape}")
            tensors.append(value.reshape(value.shape[0], *value.shape[-2:]) != 0)
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise DataError(f"concept masks of different shapes {sorted(shapes)}; need one shape")
        return cls.from_tensor(torch.stack(tensors, 1), list(masks))

    @classmethod
    def from_dataset(cls, data: object, concepts: Sequence[str] | None = None) -> ConceptMasks:
        """Concepts from the ground truth of ``data`` (see the module docstring); ``concepts``
        default: ``object``, ``background``, every class and every attribute."""
        data = as_dataset(data)
        object_masks = _object_masks(data)
        specs = default_concepts(data) if concepts is None else _spec_list(concepts)
        _check_names(specs, len(specs))
        selectors = [_selector(data, spec) for spec in specs]  # bool [N] or None per concept
        inverted = torch.tensor([spec == BACKGROUND for spec in specs])
        rows = torch.stack(
            [torch.ones(len(data), dtype=torch.bool) if s is None else s for s in selectors], 1
        )  # [N, C]: which images hold the concept

        def build(idx: torch.Tensor) -> torch.Tensor:
            obj = object_masks[idx].reshape(len(idx), 1, *object_masks.shape[-2:]).bool()
            region = torch.where(inverted[None, :, None, None], ~obj, obj)
            return region & rows[idx][:, :, None, None]

        return cls(specs, len(data), tuple(object_masks.shape[-2:]), build)


def default_concepts(data: ImageDataset) -> list[str]:
    """``object``, ``background``, ``class=<c>`` for each class and each attribute of ``data``."""
    return [
        OBJECT,
        BACKGROUND,
        *(f"{CLASS_PREFIX}{c}" for c in data.classes),
        *((data.attribute_names or []) if data.attributes is not None else []),
    ]


def as_concept_masks(concepts: object, data: ImageDataset) -> ConceptMasks:
    """What :class:`~.dissection.Dissection` accepts as concepts: None (the ground truth of
    ``data``), names of ground-truth concepts, a :class:`ConceptMasks`, masks
    ``[N, C, H, W]``, ``(masks, names)`` or ``{name: masks [N, H, W]}``; checked to
    annotate every image of ``data``."""
    if concepts is None or isinstance(concepts, str) or _is_names(concepts):
        found = ConceptMasks.from_dataset(data, concepts)
    elif isinstance(concepts, ConceptMasks):
        found = concepts
    elif isinstance(concepts, torch.Tensor):
        found = ConceptMasks.from_tensor(concepts)
    elif isinstance(concepts, tuple) and len(concepts) == 2:
        found = ConceptMasks.from_tensor(*concepts)
    elif isinstance(concepts, Mapping):
        found = ConceptMasks.from_mapping(concepts)
    else:
        raise DataError(
            f"cannot use a {type(concepts).__name__} as concept masks; give None (the data "
            "set's own masks), concept names, ConceptMasks, masks [N, C, H, W], (masks, names) "
            "or {name: masks [N, H, W]}"
        )
    if found.n != len(data):
        raise DataError(
            f"concept masks annotate {found.n} images but {data.name} has {len(data)}; give "
            "one mask per image"
        )
    return found


def _is_names(obj: object) -> bool:
    """A list or tuple of names (empty included: :meth:`ConceptMasks.from_dataset` says so)."""
    return isinstance(obj, list | tuple) and all(isinstance(s, str) for s in obj)


def _spec_list(concepts: Sequence[str] | str) -> list[str]:
    specs = [concepts] if isinstance(concepts, str) else list(concepts)
    if not specs:
        raise InputError("concepts is empty; name at least one concept or pass None")
    return specs


def _check_names(names: list[str], count: int) -> None:
    if len(names) != count:
        raise DataError(f"{count} concept masks but {len(names)} names")
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise DataError(f"concept names must be non-empty strings, got {bad[:5]}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"concept names must be distinct, got {twice} more than once")


def _object_masks(data: ImageDataset) -> torch.Tensor:
    masks = getattr(data, "masks", None)
    if masks is None:
        raise DataError(
            f"dissection needs per-pixel concept masks, and {data.name} has no object masks "
            "(its `masks` [N, 1, H, W] is None); use a data set with masks (shapes) or give "
            "your own: concepts=(masks [N, C, H, W], names)"
        )
    if not isinstance(masks, torch.Tensor) or masks.dim() not in (3, 4) or len(masks) != len(data):
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise DataError(
            f"{data.name}: masks must be a tensor [N, 1, H, W] with N = {len(data)}, got {shape}"
        )
    if masks.dim() == 4 and masks.shape[1] != 1:
        raise DataError(f"{data.name}: object masks must be [N, 1, H, W], got {tuple(masks.shape)}")
    return masks


def _selector(data: ImageDataset, spec: str) -> torch.Tensor | None:
    """Which images hold ``spec`` (bool ``[N]``), or None for a region of every image."""
    if spec in (OBJECT, BACKGROUND):
        return None
    if not spec.startswith(CLASS_PREFIX) and (data.attributes is None or not data.attribute_names):
        raise DataError(
            f"concept {spec!r}: {data.name} has no attributes (its `attributes` [N, A] is "
            f"None); name {OBJECT!r}, {BACKGROUND!r} or classes as 'class=<name>'"
        )
    return _matches(data, spec).bool().cpu()

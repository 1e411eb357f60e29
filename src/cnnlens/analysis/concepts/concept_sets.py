"""Concept image sets for TCAV: named sets of example images of a human concept.

Kim et al. 2018 (TCAV, section 3.1) define a concept by a set of example
images (striped textures, a colour, ...). Here a :class:`Concept` is a name and
images of a data set; it comes from the ground-truth attributes or classes of a
data set (:func:`shapes_concepts`: ``"filled"``, ``"striped=0"``,
``"class=star"``), from an ImageFolder tree with one folder per concept
(:func:`folder_concepts`, read by :mod:`cnnlens.data.readers.folder`), or from
anything :func:`~cnnlens.data.as_dataset` accepts, or a bare image tensor
(:func:`as_concepts`). A concept that keeps its data set lets TCAV draw random
counterparts from the same data set without the concept's own images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ...data.adapt import as_dataset
from ...data.base import ImageDataset
from ...errors import InputError

CLASS_PREFIX = "class="


@dataclass(frozen=True, eq=False)
class Concept:
    """The example images of one concept: images ``indices`` (long ``[n]``) of ``data``."""

    name: str
    data: ImageDataset
    indices: torch.Tensor

    def __len__(self) -> int:
        return int(self.indices.numel())

    def images(self) -> torch.Tensor:
        """The concept's images ``[n,C,H,W]``, normalised as ``data`` gives them."""
        return self.data.tensors(self.indices)[0]


def as_concept(name: str, obj: object) -> Concept:
    """``obj`` as a :class:`Concept` called ``name``: a Concept (renamed), images ``[N,C,H,W]``
    (a tensor), or anything :func:`~cnnlens.data.as_dataset` accepts (all its images)."""
    if not isinstance(name, str) or not name:
        raise InputError(f"a concept's name must be a non-empty string, got {name!r}")
    if isinstance(obj, Concept):
        concept = Concept(name, obj.data, torch.as_tensor(obj.indices, dtype=torch.long).flatten())
    else:
        if isinstance(obj, torch.Tensor):
            if obj.dim() != 4:
                raise InputError(
                    f"concept {name!r}: images must be a tensor [N,C,H,W], got shape "
                    f"{tuple(obj.shape)}"
                )
            if obj.shape[0] == 0:
                raise InputError(f"concept {name!r} has no images (an empty tensor)")
            obj = (obj, torch.zeros(obj.shape[0], dtype=torch.long))
        data = as_dataset(obj)
        concept = Concept(name, data, torch.arange(len(data)))
    if len(concept) == 0:
        raise InputError(f"concept {name!r} has no images")
    return concept


def as_concepts(concepts: Mapping[str, object] | Sequence[Concept]) -> list[Concept]:
    """A mapping ``{name: images}`` (see :func:`as_concept`) or a sequence of Concepts as a list
    of Concepts with distinct names."""
    if isinstance(concepts, Mapping):
        items = list(concepts.items())
    elif isinstance(concepts, Sequence) and all(isinstance(c, Concept) for c in concepts):
        items = [(c.name, c) for c in concepts]
    else:
        raise InputError(
            "concepts must be a mapping {name: images} or a sequence of Concepts, got "
            f"{type(concepts).__name__}"
        )
    if not items:
        raise InputError("no concepts given; name at least one concept set")
    names = [name for name, _obj in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"concept names must be distinct, got {twice} more than once")
    return [as_concept(name, obj) for name, obj in items]


def shapes_concepts(
    dataset: object,
    attributes: Sequence[str] | None = None,
    *,
    n: int | None = 50,
    seed: int = 0,
) -> dict[str, Concept]:
    """Concept sets from the ground truth of a data set with ``attributes`` (``shapes``,
    ``celeba``): ``"filled"`` (or ``"filled=1"``) = images with that attribute, ``"filled=0"``
    = images without it, ``"class=star"`` = images of that class (the class as a concept).

    ``attributes`` default: every attribute of the data set. Each concept holds ``n`` images
    drawn at random (``seed``) from those that match, or all of them if fewer match (or
    ``n`` is None).
    """
    data = as_dataset(dataset)
    if attributes is None:
        specs = list(data.attribute_names or [])
    else:
        specs = [attributes] if isinstance(attributes, str) else list(attributes)
    if not specs:
        raise InputError(f"{data.name} has no attributes; name concepts as 'class=<name>'")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise InputError(f"n must be a positive integer or None, got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Concept] = {}
    for spec in specs:
        members = torch.nonzero(_matches(data, spec)).flatten()
        if members.numel() == 0:
            raise InputError(f"concept {spec!r} matches no image of {data.name}")
        if n is not None and members.numel() > n:
            members = members[torch.randperm(members.numel(), generator=gen)[:n]].sort().values
        out[spec] = Concept(spec, data, members)
    return out


def _matches(data: ImageDataset, spec: str) -> torch.Tensor:
    """Boolean ``[N]``: which images of ``data`` show the concept ``spec``."""
    if not isinstance(spec, str) or not spec:
        raise InputError(f"a concept must be named by a non-empty string, got {spec!r}")
    if spec.startswith(CLASS_PREFIX):
        name = spec[len(CLASS_PREFIX) :]
        if name not in data.classes:
            raise InputError(
                f"concept {spec!r}: {data.name} has no class {name!r}; classes: {data.classes}"
            )
        return data.labels == data.classes.index(name)
    name, sep, value = spec.partition("=")
    names = list(data.attribute_names or [])
    if data.attributes is None or not names:
        raise InputError(
            f"concept {spec!r}: {data.name} has no attributes; name a class as 'class=<name>'"
        )
    if name not in names:
        raise InputError(f"concept {spec!r}: {data.name} has no attribute {name!r}; has {names}")
    if sep and value not in ("0", "1"):
        raise InputError(f"concept {spec!r}: an attribute value must be 0 or 1, got {value!r}")
    column = data.attributes[:, names.index(name)].bool()
    return ~column if value == "0" else column


def folder_concepts(
    root: str | Path,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    size: int = 32,
) -> dict[str, Concept]:
    """One concept per sub-folder of ``root`` (``root/<concept>/*.png|jpg``, the layout of
    Kim et al.'s code), read by the ``folder`` reader and resized to ``size``.

    ``mean`` / ``std``: the normalisation the model was trained with (the concept images'
    own statistics would shift every activation).
    """
    from ...data.readers.folder import load_folder

    data = load_folder(path=root, size=size, mean=mean, std=std)
    return {
        name: Concept(name, data, torch.nonzero(data.labels == k).flatten())
        for k, name in enumerate(data.classes)
        if bool((data.labels == k).any())
    }

"""A model spec as a command, a job or the explorer takes it: the spec text and the card
fields beside it (``weights``, ``classes``, ``input``, ``mean``, ``std``), checked at once
and read into one :func:`cnnlens.load` call (:meth:`ModelSpec.open`).

The CLI's ``--model --weights --classes --input --mean --std`` (one helper,
:mod:`cnnlens.commands.model_spec`), ``job.yaml``'s fields of the same names and
``cnnlens serve --model`` all build a :class:`ModelSpec`; :func:`card_data` reads a data
set the way the opened model's card says (input size, normalisation), and :func:`model_data`
reads it so and checks it against the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import InputError
from .card import read_classes, read_floats, read_shape

CARD_OPTIONS = ("weights", "classes", "input", "mean", "std")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


def _option(field: str) -> str:
    return f"--{field}"


@dataclass(frozen=True)
class ModelSpec:
    """``spec`` (a cnnlens model or run folder, ``package.module:callable``,
    ``torchvision:NAME``, ``timm:NAME``, a ``cnnlens.nets`` name or a ``model.yaml``)
    with its checked card fields (None: not given)."""

    spec: str
    weights: Path | None = None
    classes: tuple[str, ...] | None = None
    input_shape: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def from_fields(
        cls,
        spec: str | os.PathLike,
        fields: Mapping[str, Any] | None = None,
        *,
        name: Callable[[str], str] = _option,
    ) -> ModelSpec:
        """The spec and its card fields (:data:`CARD_OPTIONS`: a weights file, a classes file
        or list, ``"C,H,W"``, per-channel numbers), each checked; an InputError names the
        field as ``name(field)`` says (``--input`` on the command line, ``input`` in a job)."""
        fields = dict(fields or {})
        unknown = sorted(set(fields) - set(CARD_OPTIONS))
        if unknown:
            raise InputError(f"unknown model card field(s) {', '.join(unknown)}")
        weights = fields.get("weights")
        if weights is not None:
            weights = Path(weights)
            if not weights.is_file():
                raise InputError(f"{name('weights')} {weights}: no such file")
            if weights.suffix.lower() not in WEIGHT_SUFFIXES:
                raise InputError(
                    f"{name('weights')} {weights} must be a {', '.join(WEIGHT_SUFFIXES)} file"
                )
        return cls(
            spec=os.fspath(spec),
            weights=weights,
            classes=_field(name("classes"), read_classes, fields.get("classes")),
            input_shape=_field(name("input"), read_shape, fields.get("input")),
            mean=_field(name("mean"), lambda v: read_floats("mean", v, None), fields.get("mean")),
            std=_field(name("std"), lambda v: read_floats("std", v, None), fields.get("std")),
        )

    @property
    def card_given(self) -> bool:
        """Whether any card field came with the spec."""
        return any(v is not None for v in self.card().values())

    def card(self) -> dict[str, Any]:
        """The card fields as JSON values (None: not given), for ``job.json``."""
        return {
            "weights": None if self.weights is None else str(self.weights),
            "classes": None if self.classes is None else list(self.classes),
            "input": None if self.input_shape is None else list(self.input_shape),
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
        }

    @property
    def folder(self) -> Path | None:
        """The spec as a folder (a saved model, a run folder, a ``model.yaml``'s), else None."""
        path = Path(self.spec)
        return path if path.is_dir() else None

    def identity(self) -> dict[str, Any]:
        """What names this model for a run's identity: the folder resolved, else the spec
        and its card."""
        if self.folder is not None and not self.card_given:
            return {"model": str(self.folder.resolve())}
        card = self.card()
        if self.weights is not None:
            card["weights"] = str(self.weights.resolve())
        return {"model": self.spec, **{k: v for k, v in card.items() if v is not None}}

    def open(self, *, device: Any = None) -> nn.Module:
        """The model, through the one :func:`cnnlens.load` call: eval mode, ``model.meta``
        holding the card; checked (``[N, K]`` logits, classes matching ``K``, weights
        fitting) before it is returned."""
        from . import load

        return load(
            self.spec,
            weights=self.weights,
            classes=self.classes,
            input_shape=self.input_shape,
            mean=self.mean,
            std=self.std,
            device=device,
        )

    def __str__(self) -> str:
        return self.spec if self.weights is None else f"{self.spec} + {self.weights}"


def _field(label: str, read: Callable[[Any], Any], value: Any) -> Any:
    if value is None:
        return None
    try:
        return read(value)
    except InputError as exc:
        raise InputError(f"{label}: {exc}") from None


def card_data(
    data: str,
    split: str,
    card: nn.Module | Mapping[str, Any] | None = None,
    *,
    n: int | None = None,
):
    """Split ``split`` of data set ``data`` read as a model's card says (``card``: the model,
    whose ``meta`` holds it, or that mapping; None: no card, the reader's defaults): at its
    input size (where the reader takes a ``size``) and normalised with its mean/std (where
    the reader takes them, else set on a copy). ``n``: the first ``n`` images only (a
    reader that takes an ``n``, such as ``shapes``, makes no more)."""
    from ..data import load, loader_options

    meta = getattr(card, "meta", None) if isinstance(card, nn.Module) else card
    meta = meta if isinstance(meta, Mapping) else {}
    takes = loader_options(data)
    options: dict[str, Any] = {}
    shape = meta.get("input_shape")
    if shape is not None and "size" in takes and shape[1] == shape[2]:
        options["size"] = int(shape[1])
    mean, std = meta.get("mean"), meta.get("std")
    normalised = mean is not None and std is not None
    if normalised:
        channels = None if shape is None else int(shape[0])
        mean, std = _per_channel(mean, channels), _per_channel(std, channels)
        if {"mean", "std"} <= takes:
            options.update(mean=mean, std=std)
    if n is not None and "n" in takes:
        options["n"] = n
    dataset = load(data, split=split, **options)
    if n is not None and len(dataset) > n:
        dataset = dataset.subset(range(n))
    if normalised and (tuple(dataset.mean), tuple(dataset.std)) != (mean, std):
        dataset = dataset.subset(range(len(dataset)))  # a copy of our own to renormalise
        dataset.mean, dataset.std = mean, std
    return dataset


def model_data(model: nn.Module, data: str, split: str, *, n: int | None = None):
    """Split ``split`` of ``data`` as ``model``'s card says (:func:`card_data`), checked
    against the model and labelled with its card's classes, matched by name
    (:func:`cnnlens.compatibility.check_fits` with ``by_name=True``): the one step every
    command and study that pairs a model with a data set takes before any work."""
    from ..compatibility import check_fits

    return check_fits(model, card_data(data, split, model, n=n), data=data, by_name=True)


def _per_channel(values: Sequence[float], channels: int | None) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    return values * channels if channels is not None and len(values) == 1 else values

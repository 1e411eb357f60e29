"""One loader for every model: :func:`load` opens a saved cnnlens model of any kind or a
user's own module, and says what it knows about it in a :class:`ModelCard`.

Saved models open through the loaders each package registers (:mod:`.registry`);
a user's module, ``torchvision:``/``timm:`` models and :mod:`cnnlens.nets` names
are built by :mod:`.modules`; the card's fields and ``model.yaml`` are in :mod:`.card`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import nn

from ..checkpoint import META_FILE, load_state_dict_file
from ..errors import CheckpointError, InputError
from .card import (
    CARD_FILE,
    ModelCard,
    check_logits,
    read_classes,
    read_floats,
    read_model_yaml,
    read_shape,
)
from .modules import ZOOS, from_callable, from_nets, from_zoo, is_callable_spec
from .registry import check_device, loaders, open_saved, register

__all__ = ["ModelCard", "check_device", "load", "loaders", "register"]

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
SPECS = (
    "a cnnlens model or run folder, a model.yaml, package.module:callable (with weights=), "
    "torchvision:NAME, timm:NAME or a cnnlens.nets name"
)


@overload
def load(
    spec: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = ...,
    classes: Any = ...,
    input_shape: Any = ...,
    mean: Any = ...,
    std: Any = ...,
    device: str | torch.device | None = ...,
    with_card: Literal[False] = ...,
) -> nn.Module: ...


@overload
def load(
    spec: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = ...,
    classes: Any = ...,
    input_shape: Any = ...,
    mean: Any = ...,
    std: Any = ...,
    device: str | torch.device | None = ...,
    with_card: Literal[True],
) -> tuple[nn.Module, ModelCard]: ...


def load(
    spec: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    classes: Any = None,
    input_shape: Any = None,
    mean: Any = None,
    std: Any = None,
    device: str | torch.device | None = None,
    with_card: bool = False,
) -> nn.Module | tuple[nn.Module, ModelCard]:
    """Open a model in eval mode; with ``with_card=True`` return ``(model, card)``.

    ``spec`` is one of:

    - a folder written by :func:`cnnlens.save` or a run folder holding ``model/``
      (a classifier, a DRIB-gated, pruned or decomposed network, an attribute
      network, a VAE: whichever package saved it registered its loader);
    - ``package.module:callable``: your own code, imported as you would import it
      (the current ``sys.path`` plus the current directory), called with no
      arguments, returning an ``nn.Module``;
    - ``torchvision:NAME`` / ``timm:NAME`` when that package imports;
    - a :mod:`cnnlens.nets` name such as ``resnet50`` (torchvision's layout);
    - a ``model.yaml`` (or a folder or weights file with one beside it) holding
      the same fields as the arguments below, ``model:`` being the spec.

    For a module, ``weights`` is a ``.safetensors`` or ``.pt``/``.pth`` state dict
    (read with ``torch.load(weights_only=True)``: no pickled code is ever run;
    the dict itself or under ``state_dict``/``model``), loaded strictly. The card:
    ``classes`` (names, or a file with one a line; default ``"0".."K-1"``),
    ``input_shape`` ``(C, H, W)`` or ``"C,H,W"``, ``mean``, ``std``; arguments win
    over ``model.yaml``. With an input shape the model is checked at once: a zero
    input must give ``[1, K]`` logits and ``K`` must match the classes. ``model.meta``
    holds the card's fields as for a saved model. A saved folder carries its own
    weights and card, so those arguments are refused there.
    """
    if device is not None:
        check_device(device)
    given = {"classes": classes, "input_shape": input_shape, "mean": mean, "std": std}
    text = os.fspath(spec)
    path = Path(text)
    fields: dict[str, Any] = {}
    if path.is_dir() and not (path / CARD_FILE).is_file() or _saved(path):
        stray = [k for k, v in {"weights": weights, **given}.items() if v is not None]
        if stray:
            raise InputError(
                f"{path} is a saved cnnlens model, which carries its own weights and card; "
                f"drop {', '.join(stray)} (they are for a module spec)"
            )
        model, kind = open_saved(path, device=device)
        card = ModelCard.from_meta(model.meta, source=text, kind=kind)
        return (model, card) if with_card else model
    if path.is_dir():
        fields = read_model_yaml(path / CARD_FILE)
    elif path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        fields = read_model_yaml(path)
    elif path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES:
        if not (path.parent / CARD_FILE).is_file():
            raise InputError(
                f"{path} holds weights but not the model: pass the model spec "
                f"(package.module:callable or a cnnlens.nets name) with weights={path}, "
                f"or put a {CARD_FILE} naming it beside the file"
            )
        fields = {**read_model_yaml(path.parent / CARD_FILE), "weights": path}
    else:
        fields = {"model": text}
        if weights is not None and (Path(weights).parent / CARD_FILE).is_file():
            card_fields = read_model_yaml(Path(weights).parent / CARD_FILE)
            fields = {**card_fields, "model": text}
    if weights is not None:
        fields["weights"] = Path(weights)
    if given["classes"] is not None:
        given["classes"] = read_classes(given["classes"])
    fields.update({k: v for k, v in given.items() if v is not None})
    model, card = _build(fields, source=text)
    if device is not None:
        model.to(device)
    model.eval()
    if card.input_shape is not None:
        k = check_logits(model, card)
        if card.classes is None:
            card = dataclasses.replace(card, classes=tuple(map(str, range(k))))
    model.meta = {
        "classes": None if card.classes is None else list(card.classes),
        "mean": None if card.mean is None else list(card.mean),
        "std": None if card.std is None else list(card.std),
        "input_shape": None if card.input_shape is None else list(card.input_shape),
        "extra": {"source": card.source, "kind": card.kind},
    }
    return (model, card) if with_card else model


def _saved(path: Path) -> bool:
    return (path / META_FILE).is_file() or (path / "model" / META_FILE).is_file()


def _build(fields: dict[str, Any], *, source: str) -> tuple[nn.Module, ModelCard]:
    """The module ``fields["model"]`` names, its weights loaded, and its card."""
    from .. import nets

    spec = fields.get("model")
    if not isinstance(spec, str) or not spec:
        raise InputError(f"{source}: no model spec (model: package.module:callable in {CARD_FILE})")
    classes = fields.get("classes")
    defaults: dict[str, Any] = {}
    if spec.partition(":")[0] in ZOOS and ":" in spec:
        model, defaults = from_zoo(spec)
        kind = spec.partition(":")[0]
    elif is_callable_spec(spec):
        model, kind = from_callable(spec), "module"
    elif spec in nets.names():
        model, defaults = from_nets(spec, None if classes is None else len(classes))
        kind = "nets"
    elif "/" in spec or os.sep in spec or Path(spec).exists():
        raise CheckpointError(
            f"no saved model in {spec}: expected {META_FILE} or model/{META_FILE} there "
            f"(a model is {SPECS})"
        )
    else:
        raise InputError(f"{spec!r} is not a model spec: a model is {SPECS}")
    if fields.get("weights") is not None:
        load_state_dict_file(model, fields["weights"])
    shape = read_shape(fields.get("input_shape", defaults.get("input_shape")))
    channels = None if shape is None else shape[0]
    card = ModelCard(
        classes=None if classes is None else tuple(classes),
        input_shape=shape,
        mean=read_floats("mean", fields.get("mean", defaults.get("mean")), channels),
        std=read_floats("std", fields.get("std", defaults.get("std")), channels),
        source=spec if fields.get("weights") is None else f"{spec} + {fields['weights']}",
        kind=kind,
    )
    return model, card

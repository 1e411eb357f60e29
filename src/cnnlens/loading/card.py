"""A model card: what a bare ``nn.Module`` does not carry and cnnlens needs.

:class:`ModelCard` holds the class names, the input shape ``(C, H, W)``, the
normalisation (``mean``, ``std``) and the spec the model was opened from. A
saved cnnlens model carries these in ``model.json`` (:func:`cnnlens.checkpoint.read_meta`);
for a user's module they come as arguments of :func:`cnnlens.load` or from a
``model.yaml`` (:func:`read_model_yaml`) beside the weights file::

    model: mypackage.models:build      # package.module:callable, torchvision:NAME, ...
    weights: resnet.pth                # relative to this file
    classes: classes.txt               # a file with one name a line, or a list
    input_shape: [3, 224, 224]         # or "3,224,224"
    mean: [0.485, 0.456, 0.406]
    std: [0.229, 0.224, 0.225]

:func:`check_logits` checks a model against its card before any work.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError, first_line
from ..hooks import frozen

CARD_FILE = "model.yaml"
FIELDS = ("model", "weights", "classes", "input_shape", "mean", "std")


@dataclass(frozen=True)
class ModelCard:
    """What cnnlens knows about a loaded model besides its weights.

    ``classes`` (one name per output logit), ``input_shape`` ``(C, H, W)``,
    ``mean`` and ``std`` (per channel, the normalisation the model expects) may
    be None when unknown; ``source`` is the spec it was opened from and
    ``kind`` the loader that opened it (``"classifier"``, ``"drib-gated"``,
    ``"module"`` for a user's callable, ...).
    """

    classes: tuple[str, ...] | None
    input_shape: tuple[int, int, int] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    source: str
    kind: str

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], *, source: str, kind: str) -> ModelCard:
        """The card of a saved model from its ``model.json`` (or ``model.meta``)."""
        classes, shape = meta.get("classes"), meta.get("input_shape")
        mean, std = meta.get("mean"), meta.get("std")
        return cls(
            classes=None if classes is None else tuple(str(c) for c in classes),
            input_shape=None if shape is None else tuple(int(s) for s in shape),
            mean=None if mean is None else tuple(float(v) for v in mean),
            std=None if std is None else tuple(float(v) for v in std),
            source=source,
            kind=kind,
        )


def read_classes(value: Any, *, base: Path | None = None) -> tuple[str, ...] | None:
    """Class names from a list, or from a text file with one name a line (blank lines
    skipped; a relative path is taken from ``base``)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        path = Path(value)
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise InputError(f"classes file {path} does not exist (one class name a line)")
        try:
            names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"classes file {path} is not readable text: {exc}") from None
        names = [n for n in names if n]
        if not names:
            raise InputError(f"classes file {path} holds no class names (one a line)")
        return tuple(names)
    if isinstance(value, Sequence) and value and all(isinstance(c, (str, int)) for c in value):
        return tuple(str(c) for c in value)
    raise InputError(f"classes must be a list of names or a file of names, got {value!r}")


def read_shape(value: Any) -> tuple[int, int, int] | None:
    """``(C, H, W)`` from three positive ints or the text ``"C,H,W"``."""
    if value is None:
        return None
    items = value.replace("x", ",").split(",") if isinstance(value, str) else value
    try:
        shape = tuple(operator.index(int(v) if isinstance(v, str) else v) for v in items)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"input_shape must be three positive ints C,H,W, got {value!r}")
    return shape  # type: ignore[return-value]


def read_floats(name: str, value: Any, channels: int | None) -> tuple[float, ...] | None:
    """Per-channel ``mean`` / ``std`` from numbers, the text ``"a,b,c"`` or one number for
    every channel (``std: 0.25`` in a ``model.yaml`` or ``job.yaml``, as ``--std 0.25``)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    items = value.split(",") if isinstance(value, str) else value
    try:
        out = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numbers, one per channel, got {value!r}") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise InputError(f"{name} must be finite numbers, one per channel, got {value!r}")
    if name == "std" and min(out) <= 0:
        raise InputError(f"std must be positive, got {list(out)}")
    if channels is not None and len(out) not in (1, channels):
        raise InputError(f"{name} has {len(out)} values for {channels}-channel input")
    return out


def read_model_yaml(path: str | Path) -> dict[str, Any]:
    """The fields of a ``model.yaml`` (:data:`FIELDS`); ``weights`` and a ``classes``
    file resolved relative to the file's folder."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path} is not readable YAML: {first_line(exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{path} must hold a mapping of {', '.join(FIELDS)}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise InputError(
            f"{path}: unknown fields {', '.join(unknown)} (known: {', '.join(FIELDS)})"
        )
    fields = dict(raw)
    if fields.get("weights") is not None:
        fields["weights"] = path.parent / str(fields["weights"])
    if fields.get("classes") is not None:
        fields["classes"] = read_classes(fields["classes"], base=path.parent)
    return fields


def check_logits(model: nn.Module, card: ModelCard) -> int:
    """The number of logits ``K`` of ``model`` for a zero input of the card's shape;
    an InputError unless it returns ``[1, K]`` logits and ``K`` matches the classes.

    The model is left as it was (:func:`cnnlens.hooks.frozen`, no gradients).
    """
    if card.input_shape is None:
        raise InputError(f"{card.source}: give input_shape (C,H,W) to check the model")
    param = next(model.parameters(), None)
    x = torch.zeros(1, *card.input_shape, device=None if param is None else param.device)
    shape = "x".join(map(str, card.input_shape))
    try:
        with frozen(model), torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise InputError(
            f"{card.source} fails on a {shape} input: {first_line(exc)}; is input_shape right?"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise InputError(
            f"{card.source} returns a {type(out).__name__} for a {shape} input, "
            "not a logits tensor [N, K]; wrap it so forward returns the logits"
        )
    if out.dim() != 2 or out.shape[0] != 1:
        raise InputError(
            f"{card.source} returns shape {list(out.shape)} for one {shape} input; "
            "expected logits [N, K]"
        )
    k = int(out.shape[1])
    if card.classes is not None and len(card.classes) != k:
        raise InputError(
            f"{len(card.classes)} class names are given but {card.source} outputs {k} logits"
        )
    return k

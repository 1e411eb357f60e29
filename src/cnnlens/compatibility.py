"""Does a model take a data set's images and predict its classes?

Checked once, before any work, by every job that pairs a saved model with a
data set, so a mismatch is one named error (``the model expects 3-channel
32x32 images; digits gives 1-channel 32x32``) instead of a shape error deep
inside a method, minutes later.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from .errors import InputError, first_line
from .hooks import frozen


def _recorded_shape(model: nn.Module) -> tuple[int, int, int] | None:
    """``(C, H, W)`` recorded when the model was saved (``cnnlens.save(input_shape=...)``)."""
    meta = getattr(model, "meta", None)
    shape = meta.get("input_shape") if isinstance(meta, dict) else None
    return None if shape is None else tuple(int(v) for v in shape)


def _first_conv_channels(model: nn.Module) -> int | None:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else int(conv.in_channels)


def _describe(shape: Sequence[int | None]) -> str:
    c, h, w = shape
    return f"{c}-channel" + ("" if h is None else f" {h}x{w}")


def check_fits(model: nn.Module, dataset, *, data: str, by_name: bool = False):
    """Raise :class:`~cnnlens.errors.InputError` unless ``model`` fits ``dataset``; return
    the data set to use with it.

    ``dataset`` is an :class:`~cnnlens.data.base.ImageDataset`; ``data`` is how
    the user named it. The channels and image size are compared with the shape
    recorded at save time, or (not recorded) the channels with the model's first
    convolution and the rest by one probe forward on the first image, whose
    shape error becomes the message. The model must return logits ``[1, K]``,
    and ``K`` must equal the number of class names its card gives.

    Classes: with ``by_name`` (the commands, jobs and the explorer, which use the returned
    data set), data whose class names are among the card's (``model.meta["classes"]``) but
    not the same list (fewer, e.g. an ImageFolder of some of an ImageNet model's 1000
    classes, or another order) is returned as a copy labelled with the card's class indices,
    matched by name, and the card's class list. Otherwise the number of data classes must
    equal ``K`` (labels taken as class indices, as the data gives them); when it does not,
    the message names the folder names the card lacks.
    """
    given = tuple(dataset.image_shape)
    recorded = _recorded_shape(model)
    if recorded is not None and recorded != given:
        raise InputError(
            f"the model expects {_describe(recorded)} images; {data} gives {_describe(given)}"
        )
    channels = _first_conv_channels(model)
    if channels is not None and channels != given[0]:
        raise InputError(
            f"the model expects {channels}-channel images; {data} gives {_describe(given)}"
        )
    if len(dataset) == 0:
        return dataset
    x, _ = dataset.tensors([0])
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(param.device)
    try:
        with frozen(model), torch.no_grad():
            logits = model(x)
    except RuntimeError as exc:
        reason = first_line(exc) or type(exc).__name__
        raise InputError(
            f"the model does not run on the {_describe(given)} images of {data}: {reason}"
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != 1:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(f"the model returns {got} for one image; expected logits [1, K]")
    k = int(logits.shape[1])
    meta = getattr(model, "meta", None)
    names = meta.get("classes") if isinstance(meta, dict) else None
    names = None if names is None else [str(c) for c in names]
    if names is not None and len(names) != k:
        raise InputError(f"the model's card names {len(names)} classes but it outputs {k} logits")
    ours = [str(c) for c in dataset.classes]
    if names is None or ours == names:
        if k != len(ours):
            raise InputError(f"the model predicts {k} classes; {data} has {len(ours)}")
        return dataset
    missing = [c for c in ours if c not in names]
    if by_name and not missing:
        return _relabelled(dataset, names)
    if k == len(ours):
        return dataset  # the same number of classes: labels are class indices, as before
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    shown = ", ".join(missing[:10]) + more
    if not missing:
        raise InputError(
            f"the model predicts {k} classes; {data} has {len(ours)}, all among the model's "
            "class names (this caller cannot map them by name)"
        )
    raise InputError(
        f"the model predicts {k} classes; {data} has {len(ours)}, and its class names {shown} "
        f"are not among the model's ({', '.join(names[:5])}{', ...' if k > 5 else ''}): "
        "name the data's class folders as the model's classes, or give the model's class names"
    )


def _relabelled(dataset, names: list[str]):
    """A shallow copy of ``dataset`` whose labels (and box labels) are indices into
    ``names``, matched by class name, and whose ``classes`` are ``names``."""
    index = {name: i for i, name in reversed(list(enumerate(names)))}  # the first one wins
    lookup = torch.tensor([index[str(c)] for c in dataset.classes], dtype=torch.long)
    out = copy.copy(dataset)
    out.labels = lookup[dataset.labels.long()]
    out.classes = list(names)
    box_labels = getattr(dataset, "all_box_labels", None)
    if box_labels is not None:
        out.all_box_labels = [lookup[b.long()] for b in box_labels]
    return out

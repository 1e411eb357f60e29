"""Does a model take a data set's images and predict its classes?

Checked once, before any work, by every job that pairs a saved model with a
data set, so a mismatch is one named error (``the model expects 3-channel
32x32 images; digits gives 1-channel 32x32``) instead of a shape error deep
inside a method, minutes later.
"""

from __future__ import annotations

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


def check_fits(model: nn.Module, dataset, *, data: str) -> None:
    """Raise :class:`~cnnlens.errors.InputError` unless ``model`` fits ``dataset``.

    ``dataset`` is an :class:`~cnnlens.data.base.ImageDataset`; ``data`` is how
    the user named it. The channels and image size are compared with the shape
    recorded at save time, or (not recorded) the channels with the model's first
    convolution and the rest by one probe forward on the first image, whose
    shape error becomes the message. The number of outputs must equal the
    number of classes.
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
        return
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
    if logits.shape[1] != dataset.num_classes:
        raise InputError(
            f"the model predicts {logits.shape[1]} classes; {data} has {dataset.num_classes}"
        )

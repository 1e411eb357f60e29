"""Running a user's model on images for an analysis: where the images go, and one clear
error when the model cannot take them (shared by TCAV, dissection and layer similarity)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError, first_line


def run_model(model: nn.Module, x: torch.Tensor) -> object:
    """``model(x)``; a RuntimeError (a shape the model cannot take) becomes an InputError."""
    try:
        return model(x)
    except RuntimeError as exc:
        raise InputError(
            f"{type(model).__name__} cannot run on images of shape {tuple(x.shape[1:])} "
            f"(is it the model for this data set?): {first_line(exc)}"
        ) from None

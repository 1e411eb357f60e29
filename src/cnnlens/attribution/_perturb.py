"""Small helpers shared by the perturbation and optimisation methods (part 2).

Hyperparameter checks that raise :class:`~cnnlens.errors.InputError` with the
bad value, the baseline fill used when a region is removed, a seeded
generator on the model's device, and the target score of a batch of inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InputError
from ..seeding import seeded_generator


def positive_int(name: str, value: object) -> int:
    """``value`` as an ``int >= 1`` or an :class:`InputError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value


def positive_float(name: str, value: object, *, allow_zero: bool = False) -> float:
    """``value`` as a finite ``float > 0`` (``>= 0`` with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not (v >= 0 if allow_zero else v > 0) or v != v or v == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def pair(name: str, value: object) -> tuple[int, int]:
    """An ``int`` or a pair of ints as ``(height, width)``, all positive."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise InputError(f"{name} must be a positive int or (height, width), got {value!r}")
    return int(value[0]), int(value[1])


def generator(device: torch.device, seed: object) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (an int)."""
    return seeded_generator(seed, device)


def baseline_like(baseline: object, inputs: torch.Tensor) -> torch.Tensor:
    """The fill for removed pixels, broadcast to ``inputs`` ``[N,C,H,W]``.

    A number (``0`` = the data set mean for normalised inputs), or a tensor
    broadcastable to ``[N,C,H,W]`` (e.g. ``[C,1,1]`` or ``[N,C,H,W]``).
    """
    if isinstance(baseline, int | float) and not isinstance(baseline, bool):
        return torch.full_like(inputs, float(baseline))
    if isinstance(baseline, torch.Tensor):
        b = baseline.to(device=inputs.device, dtype=inputs.dtype)
        try:
            return b.expand_as(inputs) if b.dim() == 4 else b[None].expand_as(inputs)
        except RuntimeError:
            pass
        raise InputError(
            f"baseline of shape {tuple(baseline.shape)} does not broadcast to the inputs "
            f"{tuple(inputs.shape)}"
        )
    raise InputError(f"baseline must be a number or a tensor, got {type(baseline).__name__}")


def target_scores(
    run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """``run(x)[i, target[i]]``, ``[k]``; ``run`` from :func:`cnnlens.accel.forward_runner`."""
    return run(x).gather(1, target[:, None])[:, 0]

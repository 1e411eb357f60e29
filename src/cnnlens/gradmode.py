"""Autograd for cnnlens' entry points, whatever the caller's grad mode.

Users explain and score inside ``torch.no_grad()`` or ``torch.inference_mode()``
(evaluation code does). The entry points (:class:`~cnnlens.attribution.base.Method`
calls, the metrics) therefore run with inference mode off and gradients on, and
clone the caller's inference tensors, which autograd cannot save for backward, into
ordinary ones. The caller's mode is back as it was when they return.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def autograd_on() -> Iterator[None]:
    """Inference mode off and gradients on, inside the block only."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def usable(value: Any) -> Any:
    """``value``, or a clone of it if it is an inference tensor (call under :func:`autograd_on`)."""
    if isinstance(value, torch.Tensor) and value.is_inference():
        return value.clone()
    return value


def with_autograd(fn: F) -> F:
    """Run ``fn`` under :func:`autograd_on`, its tensor arguments made :func:`usable`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with autograd_on():
            args = tuple(usable(a) for a in args)
            kwargs = {k: usable(v) for k, v in kwargs.items()}
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

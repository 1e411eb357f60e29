"""Forward-only chunks through ``torch.compile`` (inductor), for long jobs.

Inductor fuses each convolution with the pointwise operations after it (the ReLU,
the residual addition) by itself, through the public API. A cold compile takes
20-40 s, so only runs long enough to repay it use it: jobs with ``--compile on``
(or ``auto`` on enough images).
``benchmarks/compile.py`` compares it with the uncompiled fast copies.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..layers import cached_per_model
from .layout import FastCopy, same_outputs

log = logging.getLogger(__name__)

_COMPILE: weakref.WeakSet = weakref.WeakSet()
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def compiled_forward(model: nn.Module) -> Iterator[None]:
    """Inside the block, forward-only chunks of ``model`` (fast copy kind ``"forward"``)
    run a copy compiled by ``torch.compile``: once per model (dynamic batch size) on
    first use, kept while the model lives; if compiling fails or the copy's logits
    differ, the usual fast copy runs instead (a debug line of the ``cnnlens.accel``
    logger says why)."""
    added = model not in _COMPILE
    _COMPILE.add(model)
    try:
        yield
    finally:
        if added:
            _COMPILE.discard(model)


def compiled_copy(
    model: nn.Module, x: torch.Tensor, base: Callable[[], FastCopy | None]
) -> FastCopy | None:
    """Inside :func:`compiled_forward`, ``torch.compile`` of ``base()`` (a fast copy of
    ``model``, or None for the model itself), made again only when the model's
    structure, parameters or the image shape change (not the batch size: it is
    compiled dynamic). None outside the block or where compiling fails."""
    if model not in _COMPILE:
        return None

    def make() -> FastCopy | None:
        fast = base()
        module, layout = (fast.module, fast.layout) if fast else (model, torch.contiguous_format)
        probe = x[:2].contiguous(memory_format=layout)
        try:
            compiled = torch.compile(module, dynamic=True)
            with torch.no_grad():
                got = compiled(probe)  # compiles now
        except RuntimeError as exc:  # dynamo's and inductor's errors (an op it cannot
            # lower, no C++ compiler) are RuntimeErrors
            log.debug(
                "no compiled copy of %s: torch.compile failed (%s: %s); running it uncompiled",
                type(model).__name__, type(exc).__name__, exc,
            )  # fmt: skip
            return None
        with torch.no_grad():
            expected = model(x[:2])
        if not same_outputs(got, expected):
            log.debug("no compiled copy of %s: its logits differ", type(model).__name__)
            return None
        return FastCopy(compiled, layout)

    return cached_per_model(_COMPILED, model, x, make)

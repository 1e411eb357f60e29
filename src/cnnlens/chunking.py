"""The one chunking helper: run many perturbed inputs through a model in chunks.

Every sampled or stepped method (IG steps, SmoothGrad noise, occlusion
windows, RISE masks, LIME/SHAP coalitions, deletion steps, ...) describes its
work as ``total`` items and a function that builds and evaluates items
``[start, stop)``; :func:`run_chunked` calls it chunk by chunk and
concatenates the results. The chunk size comes from :func:`chunk_size`: the
fastest batch for the device, capped by a memory budget measured with one
probe forward, so no default runs out of memory on large inputs. The model a
chunk runs is the caller's choice (the model, or a fast copy of it from
:mod:`cnnlens.accel`).
"""

from __future__ import annotations

import math
import os
import re
import weakref
from collections.abc import Callable

import torch
from torch import nn

from .errors import InputError
from .hooks import frozen
from .params import Param
from .progress import Progress
from .tracing import CallWatch, tensors

# Fastest batch per device for (forward-only, forward+backward) chunks. Forward-only:
# measured when they ran a fused copy (cnnlens.fusion, since retired) on this
# project's 2-core Intel Xeon (2.6 GHz): ResNet-20 at 32x32, 16 images, interleaved
# rounds, LIME (200 samples) took 2.83 / 2.45 / 2.23 / 2.16 s at chunks of 16 / 32 /
# 64 / 128 with 2 threads and 3.73 / 3.04 / 2.92 / 3.35 s with 1; occlusion (2
# threads) 0.87 / 0.65 / 0.59 / 0.72 s: 64 for both. Forward+backward chunks: 32
# (measured on the AMD EPYC the project ran on before; 64 was 1.2x slower there).
# GPUs like larger ones.
PREFERRED_BATCH = {"cpu": (64, 32), "cuda": (512, 512), "mps": (256, 256)}
# The backward's peak over the tensors alive at the end of the forward (its saved
# tensors): ResNet-50 at 224 px, CPU, frozen weights, one gradient to the input:
# 101 MB per image measured (peak RSS of batch 5 minus batch 1, over 4), 79.8 MB
# alive after the forward: 1.27. Forward-only: 14.4 MB per image measured, 10.7 MB
# peak alive + 2 x the largest output (3.1 MB) + the input = 17.4 MB estimated.
BACKWARD_HEADROOM = 1.3

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
    "t": 1 << 40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e[+-]?\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_memory(value: int | float | str) -> int:
    """Bytes from an int, or a size such as ``"2GiB"``, ``"512MB"``, ``"1.5g"``.

    ``KiB/MiB/GiB/TiB`` (and the one-letter ``k/m/g/t``) are powers of 1024,
    ``kB/MB/GB/TB`` powers of 1000; no unit means bytes. Anything else, or a
    size under one byte, is an :class:`InputError`.
    """
    hint = "memory must be bytes or a size such as '2GiB' or '512MB'"
    if isinstance(value, bool):
        raise InputError(f"{hint}, got {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise InputError(f"{hint}, got {value!r}")
    if unit not in _UNITS:
        raise InputError(f"{hint} (units: B, kB, MB, GB, KiB, MiB, GiB), got {value!r}")
    size = number * _UNITS[unit]
    if not math.isfinite(size) or size < 1:
        raise InputError(f"{hint}, at least one byte, got {value!r}")
    return int(size)


MEMORY = Param(
    "any",  # checked by parse_memory, whose message says what a size is
    None,
    none=True,
    validate=parse_memory,
    help="bytes the expanded chunks may use: an integer or a size such as '2GiB'; "
    "none: a share of the free memory (CNNLENS_MEMORY_BUDGET overrides it)",
)


def memory_budget(device: torch.device, memory: int | float | str | None = None) -> int:
    """Bytes a chunk may use: ``memory`` when given (:func:`parse_memory`), else
    ``CNNLENS_MEMORY_BUDGET``, else a share of the free memory (half a GPU's free
    memory; a quarter of the available RAM, at most 4 GiB)."""
    if memory is not None:
        return parse_memory(memory)
    env = os.environ.get("CNNLENS_MEMORY_BUDGET")
    if env:
        return parse_memory(env)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pages = 8 << 30
    return int(min(pages * 0.25, 4 << 30))


class _Alive:
    """Bytes of the tensors a forward makes that are still alive, and their peak.

    Every tensor a torch call returns (seen by :class:`~cnnlens.tracing.CallWatch`)
    counts once per storage until it is freed; the model's parameters and buffers,
    and views of what is already counted, do not. With autograd on, what the
    backward saves stays alive, so the peak includes it.
    """

    def __init__(self, model: nn.Module) -> None:
        self.counted = {
            t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())
        }
        self.now = self.peak = self.largest = 0

    def _free(self, ptr: int, size: int) -> None:
        self.now -= size
        self.counted.discard(ptr)

    def seen(self, _name: str, _args: tuple, _kwargs: dict, out: object) -> None:
        for t in tensors(out):
            storage = t.untyped_storage()
            ptr, size = storage.data_ptr(), storage.nbytes()
            if ptr == 0 or ptr in self.counted:
                continue
            self.counted.add(ptr)
            self.now += size
            self.peak = max(self.peak, self.now)
            self.largest = max(self.largest, size)
            weakref.finalize(t, self._free, ptr, size)


def item_bytes(model: nn.Module, sample: torch.Tensor, *, backward: bool = True) -> int:
    """Bytes one item of a chunk needs, from a probe forward of ``sample[:1]``.

    The probe (model frozen: eval mode, weights not requiring gradients, as a
    method runs it) watches every tensor the forward makes: forward-only, the
    peak of those alive at once plus two of the largest (an operation's input and
    output) and the item itself; with ``backward``, autograd on, the peak
    (which then holds the saved tensors) times :data:`BACKWARD_HEADROOM` plus the
    same, the item's gradient included.
    """
    alive = _Alive(model)
    with torch.inference_mode(False), torch.set_grad_enabled(backward), frozen(model):
        x = sample[:1].detach().clone().requires_grad_(backward)
        with CallWatch(alive.seen):
            out = model(x)
        del out
    item = x.numel() * x.element_size()
    if backward:
        return int(alive.peak * BACKWARD_HEADROOM + 2 * alive.largest + 2 * item)
    return int(alive.peak + 2 * alive.largest + item)


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (what a fast copy of it holds again)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


_ITEM_BYTES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def chunk_size(
    model: nn.Module,
    sample: torch.Tensor,
    *,
    backward: bool = True,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
) -> int:
    """Items per chunk for ``model`` on inputs shaped like ``sample``.

    An explicit ``batch_size`` wins (it must be positive). Otherwise the
    device's preferred batch, lowered until ``chunk x item_bytes`` fits the
    budget (:func:`memory_budget` of ``memory``) less a copy of the model's
    weights (the fast copy :mod:`cnnlens.accel` may make); at least one item.
    """
    if batch_size is not None:
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        return int(batch_size)
    budget = memory_budget(sample.device, memory)
    key = (tuple(sample.shape[1:]), sample.dtype, str(sample.device), backward)
    known = _ITEM_BYTES.setdefault(model, {})
    if key not in known:
        known[key] = item_bytes(model, sample, backward=backward)
    fits = (budget - model_bytes(model)) // max(known[key], 1)
    preferred = PREFERRED_BATCH.get(sample.device.type, (32, 32))[1 if backward else 0]
    return int(max(1, min(preferred, fits)))


def run_chunked(
    fn: Callable[[int, int], torch.Tensor | tuple[torch.Tensor, ...]],
    total: int,
    size: int,
    *,
    desc: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Call ``fn(start, stop)`` over ``[0, total)`` in chunks of ``size``; concatenate on dim 0.

    ``fn`` may return one tensor or a tuple of tensors (each concatenated).
    A progress bar is shown for long runs on a terminal when ``desc`` is given.
    """
    if total < 1:
        raise InputError(f"nothing to run: total must be >= 1, got {total}")
    parts: list = []
    with Progress(total=total, desc=desc, enabled=desc is not None) as bar:
        for start in range(0, total, size):
            stop = min(start + size, total)
            parts.append(fn(start, stop))
            bar.update(stop - start)
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p, 0) for p in zip(*parts, strict=True))
    return torch.cat(parts, 0)

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

import os
from collections.abc import Callable

import torch
from torch import nn

from .errors import InputError
from .progress import Progress

# Fastest batch per device for (forward-only, forward+backward) chunks. Forward-only:
# measured when they ran a fused copy (cnnlens.fusion, since retired) on this
# project's 2-core Intel Xeon (2.6 GHz): ResNet-20 at 32x32, 16 images, interleaved
# rounds, LIME (200 samples) took 2.83 / 2.45 / 2.23 / 2.16 s at chunks of 16 / 32 /
# 64 / 128 with 2 threads and 3.73 / 3.04 / 2.92 / 3.35 s with 1; occlusion (2
# threads) 0.87 / 0.65 / 0.59 / 0.72 s: 64 for both. Forward+backward chunks: 32
# (measured on the AMD EPYC the project ran on before; 64 was 1.2x slower there).
# GPUs like larger ones.
PREFERRED_BATCH = {"cpu": (64, 32), "cuda": (512, 512), "mps": (256, 256)}
# Backward keeps activations plus their gradients plus autograd buffers.
BACKWARD_MEMORY_FACTOR = 3.0


def memory_budget(device: torch.device) -> int:
    """Bytes a chunk may use: ``CNNLENS_MEMORY_BUDGET`` or a share of free memory."""
    env = os.environ.get("CNNLENS_MEMORY_BUDGET")
    if env:
        return int(float(env))
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pages = 8 << 30
    return int(min(pages * 0.25, 4 << 30))


def activation_bytes(model: nn.Module, sample: torch.Tensor) -> int:
    """Bytes of every module output produced by one forward of ``sample`` (batch 1)."""
    total = 0

    def count(_m, _i, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    handles = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(sample[:1])
    finally:
        for h in handles:
            h.remove()
    return max(total, sample[:1].numel() * sample.element_size())


_PER_SAMPLE_CACHE: dict[tuple, int] = {}


def chunk_size(
    model: nn.Module,
    sample: torch.Tensor,
    *,
    backward: bool = True,
    batch_size: int | None = None,
) -> int:
    """Items per chunk for ``model`` on inputs shaped like ``sample``.

    An explicit ``batch_size`` wins (it must be positive). Otherwise the
    device's preferred batch, lowered until ``per-item memory x chunk`` fits
    :func:`memory_budget`.
    """
    if batch_size is not None:
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        return int(batch_size)
    device = sample.device
    key = (id(model), tuple(sample.shape[1:]), sample.dtype, str(device))
    per_item = _PER_SAMPLE_CACHE.get(key)
    if per_item is None:
        per_item = activation_bytes(model, sample)
        _PER_SAMPLE_CACHE[key] = per_item
    need = per_item * (BACKWARD_MEMORY_FACTOR if backward else 1.0)
    fits = max(1, int(memory_budget(device) // max(need, 1)))
    preferred = PREFERRED_BATCH.get(device.type, (32, 32))[1 if backward else 0]
    return max(1, min(preferred, fits))


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

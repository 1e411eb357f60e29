"""The one batching helper: run many perturbed inputs through a model in chunks.

Every sampled or stepped method (IG steps, SmoothGrad noise, occlusion
windows, RISE masks, LIME/SHAP coalitions, deletion steps, ...) describes its
work as ``total`` items and a function that builds and evaluates items
``[start, stop)``; :func:`run_chunked` calls it chunk by chunk and
concatenates the results. The chunk size comes from :func:`chunk_size`: the
fastest batch for the device, capped by a memory budget measured with one
probe forward, so no default runs out of memory on large inputs. Forward-only
chunks call the model through :func:`forward`, in the memory layout the device
runs fastest.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterator
from copy import deepcopy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules import module

from .errors import InputError
from .folding import fast_forward_copy
from .fusion import fuse_pointwise
from .layers import cached_per_model
from .progress import Progress

# Fastest batch per device for (forward-only, forward+backward) chunks. Forward-only
# chunks run the fused copy (below); on this project's 2-core Intel Xeon (2.6 GHz),
# ResNet-20 at 32x32, 16 images, interleaved rounds, LIME (200 samples) took 2.83 /
# 2.45 / 2.23 / 2.16 s at chunks of 16 / 32 / 64 / 128 with 2 threads and 3.73 / 3.04
# / 2.92 / 3.35 s with 1; occlusion (2 threads) 0.87 / 0.65 / 0.59 / 0.72 s: 64 for
# both. Forward+backward chunks: 32 (measured on the AMD EPYC the project ran on
# before; 64 was 1.2x slower there). GPUs like larger ones.
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


# Methods that use the model as a black box (forward-only chunks, mask optimisations,
# gradients to the input) run a fast copy of it on the CPU:
# * BatchNorm folded into the convolution before it (cnnlens.folding): one fewer
#   pass over every feature map, forward and backward. Measured on ResNet-20 at
#   32 px, interleaved in one process, on the 2-core Intel Xeon (2.6 GHz) this
#   project runs on now: forward (batch 32) 1.10-1.16x faster than the unfolded
#   channels-last copy at 1 thread, 1.08x at 2; forward+backward to the input
#   (batch 16) 1.29-1.38x at 1 thread, 1.33x at 2. ReLUs in place on top of that
#   (where nothing else reads their input): forward 1.15x faster at 1 thread,
#   1.12x at 2 (batch 32, best of 10 rounds).
# * channels-last memory: oneDNN convolves in a channels-last (blocked) layout, so
#   the default layout pays a reorder before and after every convolution. Measured
#   the same way on the 2-core AMD EPYC the project ran on before (batch 32;
#   ResNet-50-like at 224 px, batch 4): per-image forward time fell 1.30x on
#   ResNet-20, 1.15x on VGG-11 (1 and 2 threads), 1.27x on LeNet-5 and 1.06x on
#   the ResNet-50. Channels-last inputs to the default-layout model are not
#   enough: VGG-11 then ran 8-15 % slower, reordering its weights on every call.
#   Forward+backward through the copy (gradient to the input, batch 16; 64 for
#   LeNet-5): 1.14x / 1.21x faster on ResNet-20 (1 / 2 threads), 1.05x / 1.00x on
#   VGG-11, 1.83x on LeNet-5, 1.16x on the ResNet-50 at batch 4.
# Gradient maps (saliency to Grad-CAM, IG, SmoothGrad) use an unfolded copy:
# folding rounds differently, which can flip a ReLU whose input is within float error
# of 0 and move a gradient by a whole unit's share (seen in one IG step: 0.7 % of the
# map's maximum). The folded copy's outputs differ from the model's by rounding only;
# the mask optimisations (extremal / meaningful perturbation) use it too, their
# result being the optimised mask rather than any one gradient.
# * Forward-only methods (no autograd) also run each convolution with the ReLU, or the
#   residual addition and the ReLU, after it as one oneDNN call (cnnlens.fusion):
#   ResNet-20's forward (batch 32 and 64, 1 and 2 threads) 0.75-0.79x the time of the
#   folded copy, 0.47-0.49x the model as given (benchmarks/fast_copy.py).
KINDS = ("exact", "folded", "forward")
_FAST_COPY: dict[str, weakref.WeakKeyDictionary] = {
    kind: weakref.WeakKeyDictionary() for kind in KINDS
}


@dataclass(frozen=True)
class FastCopy:
    """A copy of a model to run in its place: ``module`` takes inputs in ``layout``."""

    module: nn.Module
    layout: torch.memory_format


def fast_copy(model: nn.Module, x: torch.Tensor, kind: str = "exact") -> FastCopy | None:
    """The fast copy of ``model`` to run inputs shaped like ``x`` on, or None where
    the model should run as it is.

    Only on the CPU and for an eval-mode model without hooks. The copy is made
    once per model, input shape and ``kind``, and again when a parameter,
    buffer or module changes. It runs channels-last where the model allows it
    (a model that ``.view``s a feature map does not). ``kind``:

    * ``"exact"``: nothing else changed; gradients inside it equal the model's.
    * ``"folded"``: BatchNorm folded into convolutions and ReLUs in place where that
      is exact (:func:`cnnlens.folding.fast_forward_copy`); differentiable, for
      methods that need its outputs and their gradient to the input only.
    * ``"forward"``: ``"folded"`` with convolutions fused with the ReLU or
      addition after them (:func:`cnnlens.fusion.fuse_pointwise`); no autograd.

    A copy is used only if it gives the model's logits on one input. Hooks a
    method registers on it must be removed before the call ends, as on the
    model itself.
    """
    if kind not in KINDS:
        raise ValueError(f"fast copy kind must be one of {KINDS}, got {kind!r}")
    if kind == "forward" and model in _COMPILE and _copyable(model):
        compiled = _compiled_copy(model, x)
        if compiled is not None:
            return compiled
    if x.device.type == "cpu" and x.dim() == 4 and _copyable(model):
        make = lambda: _make_fast_copy(model, x, kind)  # noqa: E731
        return cached_per_model(_FAST_COPY[kind], model, x, make)
    return None


# Long jobs (cnnlens.jobs, --compile on) run forward-only chunks through
# torch.compile (inductor) of the "folded" copy instead: the public path to the
# fusion that cnnlens.fusion writes by hand (benchmarks/compile.py compares them).
_COMPILE: weakref.WeakSet = weakref.WeakSet()
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def compiled_forward(model: nn.Module) -> Iterator[None]:
    """Inside the block, forward-only chunks of ``model`` (kind ``"forward"``) run a copy
    compiled by ``torch.compile``: once per model (dynamic batch size) on first use,
    kept while the model lives; if compiling fails or the copy's logits differ, the
    usual fast copy runs instead."""
    added = model not in _COMPILE
    _COMPILE.add(model)
    try:
        yield
    finally:
        if added:
            _COMPILE.discard(model)


def _compiled_copy(model: nn.Module, x: torch.Tensor) -> FastCopy | None:
    """The compiled copy of ``model``, made again only when its structure, parameters
    or the image shape change (not the batch size: it is compiled dynamic)."""

    def make() -> FastCopy | None:
        folded = fast_copy(model, x, "folded") if x.device.type == "cpu" else None
        base, layout = (
            (folded.module, folded.layout) if folded else (model, torch.contiguous_format)
        )
        try:
            compiled = torch.compile(base, dynamic=True)
            probe = x[:2].contiguous(memory_format=layout)
            with torch.no_grad():
                if same_outputs(compiled(probe), model(x[:2])):
                    return FastCopy(compiled, layout)
        except Exception:  # no C++ compiler, an op inductor cannot lower: run uncompiled
            pass
        return None

    return cached_per_model(_COMPILED, model, x, make)


def fast_model(
    model: nn.Module, x: torch.Tensor, kind: str = "exact"
) -> tuple[nn.Module, torch.memory_format]:
    """The module to run inputs shaped like ``x`` on (:func:`fast_copy`, else the
    model itself) and the memory format to give it inputs in."""
    fast = fast_copy(model, x, kind)
    if fast is None:
        return model, torch.contiguous_format
    return fast.module, fast.layout


def fast_runner(
    model: nn.Module, x: torch.Tensor, kind: str = "exact"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function computing ``model(v)`` for inputs shaped like ``x``, for methods
    that use the model as a black box: through :func:`fast_model`. Gradients to
    ``v`` flow through the ``"exact"`` and ``"folded"`` kinds (``"folded"`` where
    the result is an optimised mask rather than any one gradient, as in extremal
    perturbation)."""
    run, layout = fast_model(model, x, kind)
    if run is model:
        return model
    return lambda v: run(v.contiguous(memory_format=layout))


def forward_runner(model: nn.Module, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function computing ``model(v)`` without gradients for inputs shaped like
    ``x``, through the ``"forward"`` :func:`fast_runner`: a forward-only method
    looks it up once per call and runs every chunk through it."""
    run = fast_runner(model, x, "forward")

    def forward_chunk(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return run(v)

    return forward_chunk


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` without gradients, through :func:`forward_runner`."""
    return forward_runner(model, x)(x)


def same_outputs(got: object, expected: torch.Tensor) -> bool:
    """True if ``got`` is ``expected`` up to float rounding of a reordered computation."""
    return (
        isinstance(got, torch.Tensor)
        and got.shape == expected.shape
        and torch.allclose(
            got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max().clamp_min(1))
        )
    )


def channels_last_if_same(copy: nn.Module, probe: torch.Tensor, expected: torch.Tensor) -> bool:
    """Put ``copy`` (a model copy of cnnlens' own) in channels-last memory if it is on
    the CPU and still gives ``expected`` on ``probe``; otherwise leave it as it was.
    True if converted."""
    if probe.device.type != "cpu" or probe.dim() != 4:
        return False
    copy.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            same = same_outputs(copy(probe.contiguous(memory_format=torch.channels_last)), expected)
    except RuntimeError:  # e.g. a .view() of a channels-last feature map
        same = False
    if not same:
        copy.to(memory_format=torch.contiguous_format)
    return same


def _copyable(model: nn.Module) -> bool:
    """In eval mode and without hooks, so a copy behaves as the model itself."""
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    if any(getattr(module, "_global" + name, None) for name in hooks):
        return False
    return not any(m.training or any(getattr(m, h) for h in hooks) for m in model.modules())


def _make_fast_copy(model: nn.Module, x: torch.Tensor, kind: str) -> FastCopy | None:
    probe = x[:1].contiguous()
    with torch.no_grad():
        expected = model(probe)
    try:
        if kind == "exact":
            copy, rewritten = deepcopy(model), False
        else:
            copy, rewritten = _rewritten(model, probe, expected, kind)
    except Exception:  # a model that cannot be copied (or probed twice) runs as it is
        return None
    for p in copy.parameters():
        p.requires_grad_(False)
    fast = channels_last_if_same(copy, probe, expected)
    if not (fast or rewritten):
        return None
    return FastCopy(copy, torch.channels_last if fast else torch.contiguous_format)


def _rewritten(model: nn.Module, probe: torch.Tensor, expected: torch.Tensor, kind: str):
    """(:func:`~cnnlens.folding.fast_forward_copy`, for ``kind`` "forward" also
    :func:`~cnnlens.fusion.fuse_pointwise`d, True) if that changed something and
    still gives the model's outputs on ``probe``; else (a plain copy, False). For
    ``"folded"``, ReLUs go back out of place if autograd refuses them (one that
    overwrites a tensor autograd keeps, such as a sigmoid's output)."""
    copy, folded, in_place = fast_forward_copy(model, probe)
    if kind == "folded" and in_place and not _differentiable(copy, probe):
        for relu in in_place:
            relu.inplace = False
        in_place = []
    with torch.no_grad():
        if (folded or in_place) and not same_outputs(copy(probe), expected):
            return deepcopy(model), False
        if kind == "forward":
            fused, count = fuse_pointwise(copy, probe)
            if count and same_outputs(fused(probe), expected):
                return fused, True
    return (copy, True) if folded or in_place else (deepcopy(model), False)


def _differentiable(model: nn.Module, probe: torch.Tensor) -> bool:
    v = probe.clone().requires_grad_(True)
    try:
        torch.autograd.grad(model(v).sum(), v)
    except RuntimeError:
        return False
    return True


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

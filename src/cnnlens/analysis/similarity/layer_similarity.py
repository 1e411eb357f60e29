"""Similarity of the representations of every pair of layers, within a model or across two.

The survey (paper 001, section 3.2, "hierarchical unit combination", ref. 23)
compares the representations two networks learn by aligning the activation
vectors of their neurons on the same inputs. This module collects the
activations of every named layer in one pass over the data per model (hooks
through :mod:`cnnlens.hooks`, chunks through :mod:`cnnlens.chunking`) and
compares them with linear CKA (:mod:`.cka`; Kornblith et al. 2019, Nguyen et
al. 2021) or SVCCA (:mod:`.svcca`; Raghu et al. 2017). Not to be confused with
:mod:`cnnlens.metrics.similarity`, which compares attribution maps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...chunking import chunk_size, run_chunked
from ...data.adapt import as_dataset
from ...errors import InputError, LayerError
from ...hooks import HookSet, capture_outputs, frozen
from ...layers import get_layer
from ...placement import model_device
from ..running import run_model
from .cka import MinibatchCKA, centred_gram, cka_matrix, minibatches, unbiased_hsic_matrix
from .svcca import svcca

METHODS = ("cka", "svcca")
REDUCTIONS = ("flatten", "mean")
ESTIMATORS = ("minibatch", "full")
MINIBATCH = 256  # images per minibatch of the CKA estimator (Nguyen et al. 2021 use 256)
ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Softplus,
    nn.Tanh,
    nn.Sigmoid,
)
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class LayerSimilarity:
    """``matrix[i, j]``: similarity of layer ``rows[i]`` (of the model) and ``columns[j]``
    (of the same model, or of ``other``), float64 ``[L1, L2]`` on the CPU."""

    matrix: torch.Tensor
    rows: list[str]
    columns: list[str]
    method: str
    reduce: str
    estimator: str | None  # "minibatch" / "full" for CKA, None for SVCCA
    n: int

    def to_dict(self) -> dict:
        """Plain values, for JSON."""
        return {
            "method": self.method,
            "reduce": self.reduce,
            "estimator": self.estimator,
            "n": self.n,
            "rows": list(self.rows),
            "columns": list(self.columns),
            "matrix": self.matrix.tolist(),
        }


def default_layers(model: nn.Module, probe: torch.Tensor) -> list[str]:
    """The layers compared when none are named, in the order they run on ``probe``.

    Every outermost *block* (a module that is not a Sequential/ModuleList and holds
    an ``nn.Conv2d``: a ResNet's residual blocks), and every activation module
    (ReLU, GELU, ...) outside a block, whose output is a spatial map
    ``[N, C, H, W]``. For a CIFAR ResNet: the stem's ``relu`` and each block
    (``layer1.0`` ... ``layer3.2``); for a VGG or LeNet, each convolution's ReLU. A
    module that runs more than once per forward is left out (its output is
    ambiguous). A model with none of these gets its convolutions.
    """
    trace = _trace(model, probe)
    runs: dict[str, int] = {}
    for name, _module, _out in trace:
        runs[name] = runs.get(name, 0) + 1
    once = [(n, m, o) for n, m, o in trace if runs[n] == 1 and o.dim() == 4]
    blocks = [
        n
        for n, m, _o in once
        if not isinstance(m, CONTAINERS)
        and any(isinstance(c, nn.Conv2d) for c in m.modules() if c is not m)
    ]
    outer = [b for b in blocks if not any(b.startswith(other + ".") for other in blocks)]
    inside = lambda name: any(name.startswith(b + ".") for b in outer)  # noqa: E731
    chosen = [
        n for n, m, _o in once if n in outer or (isinstance(m, ACTIVATIONS) and not inside(n))
    ]
    if not chosen:
        chosen = [n for n, m, _o in once if isinstance(m, nn.Conv2d)]
    if not chosen:
        raise LayerError(
            f"{type(model).__name__} has no convolutional block, activation module or "
            "nn.Conv2d with a spatial output to compare; name the layers"
        )
    return chosen


def _trace(model: nn.Module, probe: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(name, module, output) of every submodule as it finishes, from one forward of ``probe``."""
    order: list[tuple[str, nn.Module, torch.Tensor]] = []
    with frozen(model), HookSet() as hooks, torch.no_grad():
        for name, module in model.named_modules():
            if name:

                def record(m, _i, out, name=name):
                    if isinstance(out, torch.Tensor):
                        order.append((name, m, out))

                hooks.forward(module, record)
        run_model(model, probe)
    return order


def reduce_output(out: object, reduce: str, name: str, batch: int) -> torch.Tensor:
    """A layer's output ``[b, ...]`` as ``[b, p]``: ``"flatten"`` keeps every value,
    ``"mean"`` averages each channel over its positions (global average pooling)."""
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != batch:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise LayerError(
            f"layer {name!r} gives {shape}; expected a tensor [N, ...] with N = {batch} images"
        )
    out = out.detach()
    if reduce == "mean" and out.dim() > 2:
        return out.flatten(2).mean(2)
    return out.flatten(1)


def layer_similarity(
    model: nn.Module,
    data: object,
    *,
    layers: Sequence[str] | None = None,
    other: nn.Module | None = None,
    other_layers: Sequence[str] | None = None,
    method: str = "cka",
    reduce: str | None = None,
    estimator: str = "minibatch",
    batch_size: int | None = None,
    n: int | None = None,
    keep: float = 0.99,
    desc: str | None = None,
) -> LayerSimilarity:
    """Similarity ``[L, L]`` of the representations of ``layers`` of ``model`` (or ``[L1, L2]``
    against ``other_layers`` of ``other``, e.g. the same architecture trained with another seed).

    ``data``: anything :func:`~cnnlens.data.as_dataset` accepts; its first ``n`` images
    (default all, at least 4). ``layers`` default: :func:`default_layers`
    (``other_layers`` default: ``layers`` if given, else ``other``'s defaults).
    ``method``: ``"cka"`` (linear CKA) or ``"svcca"`` (``keep``: share of variance the
    SVD keeps). ``reduce``: ``"flatten"`` (every value of a map; the default for CKA) or
    ``"mean"`` (per-channel global average; the default for SVCCA, whose CCA needs far
    more images than dimensions). ``estimator`` (CKA): ``"minibatch"`` accumulates
    unbiased HSIC over minibatches of ``batch_size`` (default 256) images and keeps no
    activation; ``"full"`` keeps every reduced activation and computes exact linear CKA
    on all ``n`` images (as SVCCA always does; there ``batch_size`` only sizes the
    forward chunks). Each model sees each image once; its state is left as found.
    """
    method, reduce, estimator = _options(method, reduce, estimator)
    data = as_dataset(data)
    total = _count(n, len(data), data.name)
    row_names = _names(model, layers)
    device = model_device(model)
    probe = data.tensors(torch.arange(1))[0].to(device)
    row_names = row_names or default_layers(model, probe)
    models = [(model, row_names)]
    if other is not None:
        col_names = _names(other, other_layers if other_layers is not None else layers)
        other_probe = probe.to(model_device(other))
        models.append((other, col_names or default_layers(other, other_probe)))
    minibatch = method == "cka" and estimator == "minibatch"
    if not minibatch:  # forward chunks sized to memory (the result does not depend on them)
        size = min(
            chunk_size(m, probe.to(model_device(m)), backward=False, batch_size=batch_size)
            for m, _names in models
        )
    with contextlib.ExitStack() as stack:
        runners = [_runner(stack, m, names, reduce) for m, names in models]

        def features(start: int, stop: int) -> list[torch.Tensor]:
            x = data.tensors(torch.arange(start, stop))[0]
            return [f for run in runners for f in run(x)]

        rows, two = len(row_names), other is not None
        if minibatch:
            batch = MINIBATCH if batch_size is None else batch_size
            matrix = _minibatch(features, total, batch, desc)
            matrix = matrix[:rows, rows:] if two else matrix
        else:
            kept = run_chunked(lambda a, b: tuple(features(a, b)), total, size, desc=desc)
            kept = list(kept)
            matrix = _full(kept[:rows], kept[rows:] if two else None, method, keep)
    return LayerSimilarity(
        matrix.contiguous(),
        list(row_names),
        list(models[-1][1]),
        method,
        reduce,
        estimator if method == "cka" else None,
        total,
    )


def _options(method: str, reduce: str | None, estimator: str) -> tuple[str, str, str]:
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    reduce = reduce if reduce is not None else ("flatten" if method == "cka" else "mean")
    if reduce not in REDUCTIONS:
        raise InputError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if estimator not in ESTIMATORS:
        raise InputError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    return method, reduce, estimator


def _count(n: int | None, available: int, name: str) -> int:
    total = available if n is None else n
    if not isinstance(total, int) or isinstance(total, bool):
        raise InputError(f"n must be a positive integer, got {n!r}")
    if total > available:
        raise InputError(f"n={total} images asked for but {name} has {available}")
    if total < 4:
        raise InputError(f"layer similarity needs at least 4 images, got {total} (n={n!r})")
    return total


def _names(model: nn.Module, layers: Sequence[str] | None) -> list[str] | None:
    """``layers`` checked against ``model`` (a :class:`LayerError` names a missing one)."""
    if layers is None:
        return None
    if isinstance(layers, str):
        layers = [layers]
    names = list(layers)
    if not names:
        raise InputError("layers is empty; name at least one layer or pass None for the defaults")
    for name in names:
        get_layer(model, name)
    return names


def _runner(
    stack: contextlib.ExitStack, model: nn.Module, names: list[str], reduce: str
) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """A function: images -> the reduced outputs of ``names``, ``model`` frozen and hooked
    for as long as ``stack`` is open."""
    stack.enter_context(frozen(model))
    store = stack.enter_context(capture_outputs(model, names))
    device = model_device(model)

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        store.clear()
        with torch.no_grad():
            run_model(model, x.to(device))
        missing = [name for name in names if name not in store]
        if missing:
            raise LayerError(
                f"layer(s) {missing} of {type(model).__name__} did not run in its forward"
            )
        return [reduce_output(store[name], reduce, name, len(x)) for name in names]

    return run


def _minibatch(features, total: int, batch: int, desc: str | None) -> torch.Tensor:
    """Minibatch CKA (:class:`~.cka.MinibatchCKA`) of every pair of collected layers."""
    bounds = minibatches(total, batch)

    def hsic(first: int, last: int) -> torch.Tensor:
        out = []
        for start, stop in bounds[first:last]:
            grams = torch.stack([centred_gram(f) for f in features(start, stop)])
            out.append(unbiased_hsic_matrix(grams).cpu()[None])
        return torch.cat(out)

    acc = MinibatchCKA()
    for value in run_chunked(hsic, len(bounds), 1, desc=desc):
        acc.add(value)
    return acc.compute()


def _full(rows: list[torch.Tensor], columns: list[torch.Tensor] | None, method: str, keep: float):
    """CKA or SVCCA ``[L1, L2]`` between layers kept whole (``columns`` None: ``rows``)."""
    if method == "cka":
        return cka_matrix(rows, columns)
    same = columns is None
    columns = rows if same else columns
    out = torch.empty(len(rows), len(columns), dtype=torch.float64)
    for i, row in enumerate(rows):
        for j, col in enumerate(columns):
            out[i, j] = out[j, i] if same and j < i else svcca(row, col, keep=keep).similarity
    return out

"""BatchNorm folded into the convolution before it, on a copy of the model.

An eval-mode BatchNorm is an affine map per channel, ``y = (z - mean) s + beta``
with ``s = gamma / sqrt(var + eps)`` (Ioffe & Szegedy 2015, Alg. 1). When it reads
a convolution's output and nothing else does, the two are one convolution with
``W' = W s`` and ``b' = (b - mean) s + beta``, and the BatchNorm becomes
``nn.Identity``. LRP needs this (Montavon et al. 2019, sec. 10.2.2: BN merged into
the adjacent linear layer); the methods that run the model as a black box gain
speed from it (:mod:`cnnlens.batching`).

Pairs are found in one probe forward: the BatchNorm's input must be the very
tensor the convolution returned, and no other operation may read that tensor
(a residual that adds the pre-BN tensor, a ``.view`` of it) — all torch calls
are watched during the probe, so a functional use counts too.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten


class _Readers(TorchFunctionMode):
    """Counts, per watched tensor, the torch calls that read it outside the
    BatchNorm now consuming it (``reading``)."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: set[int] = set()
        self.reads: Counter[int] = Counter()
        self.reading: nn.Module | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.reading is None:
            for leaf in tree_flatten((args, kwargs))[0]:
                if isinstance(leaf, torch.Tensor) and id(leaf) in self.watched:
                    self.reads[id(leaf)] += 1
        return func(*args, **kwargs)


def foldable_pairs(model: nn.Module, probe: torch.Tensor) -> list[tuple[str, str]]:
    """``(conv name, batchnorm name)`` for each BatchNorm2d with running statistics
    that is the only reader of a Conv2d's output (each called once), found on one forward of
    ``probe`` (``model`` in eval mode; nothing of it is changed)."""
    names = {id(m): name for name, m in model.named_modules()}
    readers = _Readers()
    produced: dict[int, nn.Module] = {}  # id(conv output) -> conv
    pairs: list[tuple[int, nn.Module, nn.Module]] = []  # (id(output), conv, bn)
    kept: list = []  # keep every output alive so ids stay unique during the probe

    conv_calls: Counter[int] = Counter()

    def conv_out(module, _inp, out):
        conv_calls[id(module)] += 1
        produced[id(out)] = module
        readers.watched.add(id(out))

    def bn_in(module, inp):
        key = id(inp[0])
        if key in produced:
            pairs.append((key, produced[key], module))
            readers.reads[key] += 1
            readers.reading = module

    def bn_out(module, _inp, _out):
        if readers.reading is module:
            readers.reading = None

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_out))
        elif isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_pre_hook(bn_in))
            handles.append(m.register_forward_hook(bn_out))
    handles.append(nn.modules.module.register_module_forward_hook(lambda _m, _i, o: kept.append(o)))
    try:
        with torch.no_grad(), readers:
            model(probe)
    finally:
        for h in handles:
            h.remove()
    calls = Counter(id(bn) for _k, _c, bn in pairs)
    found = []
    for key, conv, bn in pairs:
        if (
            readers.reads[key] == 1
            and calls[id(bn)] == 1
            and conv_calls[id(conv)] == 1
            and bn.running_var is not None
            and bn.running_mean is not None
            and id(conv) in names
            and id(bn) in names
        ):
            found.append((names[id(conv)], names[id(bn)]))
    return found


def fold_batchnorm(model: nn.Module, probe: torch.Tensor) -> tuple[nn.Module, frozenset[str]]:
    """An eval-mode copy of ``model`` with every foldable BatchNorm (see
    :func:`foldable_pairs`) folded into its convolution and replaced by
    ``nn.Identity``, and the names of the convolutions that changed. The
    user's model is never modified."""
    clone = copy.deepcopy(model).eval()
    pairs = foldable_pairs(clone, probe)
    modules = dict(clone.named_modules())
    for conv_name, bn_name in pairs:
        conv, bn = modules[conv_name], modules[bn_name]
        with torch.no_grad():
            scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.affine:
                scale = scale * bn.weight
            shift = bn.bias if bn.affine else torch.zeros_like(scale)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
            conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), False)
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + shift, False)
        parent_name, _, child = bn_name.rpartition(".")
        parent = modules[parent_name] if parent_name else clone
        parent._modules[child] = nn.Identity()
    return clone, frozenset(conv for conv, _bn in pairs)

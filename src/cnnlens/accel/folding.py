"""A copy of a model that computes the same function in fewer passes over memory.

* BatchNorm folded into the convolution before it. An eval-mode BatchNorm is an
  affine map per channel, ``y = (z - mean) s + beta`` with
  ``s = gamma / sqrt(var + eps)`` (Ioffe & Szegedy 2015, Alg. 1). When it reads a
  convolution's output and nothing else does, the two are one convolution with
  ``W' = W s`` and ``b' = (b - mean) s + beta``, and the BatchNorm becomes
  ``nn.Identity``. LRP needs this (Montavon et al. 2019, sec. 10.2.2: BN merged
  into the adjacent linear layer); methods that run the model as a black box gain
  speed from it (:mod:`cnnlens.accel.fast`).
* ``nn.ReLU`` in place (:func:`fast_forward_copy` only) where nothing else reads its
  input: no new feature map is allocated.

Both are decided on one watched probe forward (:func:`watch_forward`, with
:class:`cnnlens.tracing.CallWatch`): every torch call is seen, so a functional
use of a tensor (a residual that adds the pre-BN tensor, a ``.view`` of it)
counts as a reader too.
"""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from ..tracing import CallWatch, tensors


@dataclass
class Dataflow:
    """What one forward did, by object id: which modules read each tensor made
    during it (the innermost module running at each torch call that took it),
    each module's call count, first input and output per call."""

    readers: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    made: set[int] = field(default_factory=set)
    views: set[int] = field(default_factory=set)
    calls: Counter[int] = field(default_factory=Counter)
    inputs: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    outputs: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))

    def only_reader(self, tensor: int, module: nn.Module) -> bool:
        """``tensor`` was made during the forward, is no view, and only ``module`` read it."""
        return (
            tensor in self.made
            and tensor not in self.views
            and self.readers.get(tensor) == {id(module)}
        )


def watch_forward(model: nn.Module, probe: torch.Tensor) -> Dataflow:
    """Run ``model(probe)`` once without gradients, recording its :class:`Dataflow`."""
    flow, running, kept = Dataflow(), [0], []

    def enter(module, inp):
        flow.calls[id(module)] += 1
        first = inp[0] if inp else None
        flow.inputs[id(module)].append(id(first) if isinstance(first, torch.Tensor) else 0)
        running.append(id(module))

    def seen(_name, args, kwargs, out):
        for leaf in tensors((args, kwargs)):
            flow.readers[id(leaf)].add(running[-1])
        for leaf in tensors(out):
            kept.append(leaf)  # alive, so ids stay unique during the probe
            flow.made.add(id(leaf))
            if leaf._base is not None:
                flow.views.add(id(leaf))

    def leave(module, _inp, out):
        if running[-1] == id(module):
            running.pop()
        kept.append(out)
        flow.outputs[id(module)].append(id(out) if isinstance(out, torch.Tensor) else 0)

    handles = [
        nn.modules.module.register_module_forward_pre_hook(enter),
        nn.modules.module.register_module_forward_hook(leave),
    ]
    try:
        with torch.no_grad(), CallWatch(seen):
            model(probe)
    finally:
        for h in handles:
            h.remove()
    return flow


def foldable_pairs(model: nn.Module, probe: torch.Tensor) -> list[tuple[str, str]]:
    """``(conv name, batchnorm name)`` for each BatchNorm2d with running statistics
    that is the only reader of a Conv2d's output (each called once), found on one
    forward of ``probe`` (``model`` in eval mode; nothing of it is changed)."""
    return _foldable(model, watch_forward(model, probe))


def _foldable(model: nn.Module, flow: Dataflow) -> list[tuple[str, str]]:
    by_output = {
        flow.outputs[id(m)][0]: (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and flow.calls[id(m)] == 1
    }
    pairs = []
    for name, bn in model.named_modules():
        if not isinstance(bn, nn.BatchNorm2d) or flow.calls[id(bn)] != 1:
            continue
        if bn.running_mean is None or bn.running_var is None:
            continue  # batch statistics: not a fixed affine map
        source = flow.inputs[id(bn)][0]
        if source in by_output and flow.only_reader(source, bn):
            pairs.append((by_output[source][0], name))
    return pairs


def _fold(clone: nn.Module, pairs: list[tuple[str, str]]) -> frozenset[str]:
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
    return frozenset(conv for conv, _bn in pairs)


def fold_batchnorm(model: nn.Module, probe: torch.Tensor) -> tuple[nn.Module, frozenset[str]]:
    """An eval-mode copy of ``model`` with every foldable BatchNorm (see
    :func:`foldable_pairs`) folded into its convolution and replaced by
    ``nn.Identity``, and the names of the convolutions that changed. The
    user's model is never modified."""
    clone = copy.deepcopy(model).eval()
    return clone, _fold(clone, foldable_pairs(clone, probe))


def fast_forward_copy(
    model: nn.Module, probe: torch.Tensor
) -> tuple[nn.Module, frozenset[str], list[nn.ReLU]]:
    """:func:`fold_batchnorm`, and every ``nn.ReLU`` whose input nothing else reads
    (in every call) made in place: the copy, the folded convolutions and the
    ReLUs made in place. For outputs only: a method that hooks the copy's
    modules or needs a ReLU's input must not use it."""
    clone = copy.deepcopy(model).eval()
    flow = watch_forward(clone, probe)
    folded = _fold(clone, _foldable(clone, flow))
    in_place = []
    for relu in clone.modules():
        if (
            type(relu) is nn.ReLU
            and not relu.inplace
            and flow.calls[id(relu)] >= 1
            and all(flow.only_reader(t, relu) for t in flow.inputs[id(relu)])
        ):
            relu.inplace = True
            in_place.append(relu)
    return clone, folded, in_place

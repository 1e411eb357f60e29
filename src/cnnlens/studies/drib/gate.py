"""The gated convolution of DRIB (paper 000, section 3.1; the head and masks follow Wang
et al., AAAI 2020, "Dynamic Network Pruning with Interpretable Layerwise Channel
Selection", since paper 000 does not specify them).

A gated layer is a conv (+ BatchNorm) whose output channels are multiplied by
one of ``m`` learned masks, chosen per input by a decision head:

- head: ``p = softmax(W_h GAP(ReLU(x)))``, ``W_h`` a bias-free linear
  ``C_in -> m`` whose rows are L2-normalised after each update;
- masks: ``G in R^{m x C_out}``, initialised to 1 and clamped to ``[0, 5]``
  after each update (exact zeros come from the clamp);
- training: a Gumbel-softmax sample at temperature ``tau``, hard one-hot with
  a straight-through gradient, selected mask ``onehot . G`` ``[B, C_out]``;
  inference (or ``fixed=True``): ``i = argmax p``, mask ``G[i]``;
- the mask multiplies the output after BN and before the ReLU.

:func:`gate` returns a gated copy of a model: cnnlens' CIFAR VGG (every
conv+BN+ReLU except the first) and ResNet (each BasicBlock's first conv; its
head sees the block input), or any conv net through ``layers=`` (the
layer-selection hook, see :func:`gate`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, LayerError
from ...layers import get_layer, set_layer


class GatedConv(nn.Module):
    """``mask_i * BN(conv(x))`` with ``i`` chosen per input by a decision head."""

    def __init__(self, conv: nn.Conv2d, bn: nn.Module | None, masks: int) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise LayerError(f"a gated layer needs an nn.Conv2d, got {type(conv).__name__}")
        if not isinstance(masks, int) or isinstance(masks, bool) or masks < 1:
            raise ConfigError(f"masks must be a positive integer, got {masks!r}")
        self.conv = conv
        self.bn = bn if bn is not None else nn.Identity()
        self.head_relu = nn.ReLU()  # a module of its own (hook-based methods see it)
        self.head = nn.Linear(conv.in_channels, masks, bias=False)
        self.masks = nn.Parameter(torch.ones(masks, conv.out_channels))
        self.tau = 1.0
        self.fixed = False  # argmax decisions also in training mode (fine-tuning)
        self.opened = False  # no mask at all (the reference of the credibility check)
        self.last_index: torch.Tensor | None = None
        self.last_mask: torch.Tensor | None = None
        with torch.no_grad():
            self.head.weight.copy_(F.normalize(torch.randn_like(self.head.weight), dim=1))

    def decision_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``W_h GAP(ReLU(x))``: the logits of ``p``, ``[B, m]``."""
        return self.head(self.head_relu(x).mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.opened:
            return self.bn(self.conv(x))
        logits = self.decision_logits(x)
        if self.training and not self.fixed:
            onehot = F.gumbel_softmax(logits, tau=self.tau, hard=True)
            mask = onehot @ self.masks
            index = onehot.argmax(1)
        else:
            index = logits.argmax(1)
            mask = self.masks[index]
        self.last_index, self.last_mask = index.detach(), mask
        return self.bn(self.conv(x)) * mask[:, :, None, None]

    @torch.no_grad()
    def project(self) -> None:
        """After an update: clamp masks to ``[0, 5]``, L2-normalise the head's rows."""
        self.masks.clamp_(0.0, 5.0)
        self.head.weight.copy_(F.normalize(self.head.weight, dim=1))

    def extra_repr(self) -> str:
        return f"masks={self.masks.shape[0]}, channels={self.masks.shape[1]}"


@dataclass(frozen=True)
class GateSpec:
    """One layer to gate: the conv's name, the BatchNorm right after it (or
    ``None``), and the gated layer whose output this conv reads (or ``None``)."""

    conv: str
    bn: str | None = None
    reads: str | None = None


def default_layers(model: nn.Module) -> list[GateSpec]:
    """cnnlens' choice of gated layers for its CIFAR VGG and ResNet; LayerError otherwise.

    Paper 000 attaches a gate to "each convolution layer" and names no exceptions; this
    choice (every conv but the first of a VGG, the first conv of each residual block) is
    cnnlens' own, made for the head design of Wang et al. 2020 that cnnlens follows.
    """
    from ...nets.resnet import BasicBlock, CifarResNet
    from ...nets.vgg import CifarVGG

    if isinstance(model, CifarVGG):
        specs: list[GateSpec] = []
        mods = list(model.features.named_children())
        convs = [i for i, (_n, m) in enumerate(mods) if isinstance(m, nn.Conv2d)]
        previous = None
        for i in convs[1:]:
            name = f"features.{mods[i][0]}"
            specs.append(GateSpec(name, f"features.{mods[i + 1][0]}", previous))
            previous = name
        return specs
    if isinstance(model, CifarResNet):
        return [
            GateSpec(f"{name}.conv1", f"{name}.bn1")
            for name, m in model.named_modules()
            if isinstance(m, BasicBlock)
        ]
    raise LayerError(
        f"gate() knows cnnlens' CIFAR ResNet and VGG, not {type(model).__name__}: pass "
        "layers=[(conv, bn), ...] naming the Conv2d layers to gate and the BatchNorm2d "
        "right after each (or None)"
    )


def _as_spec(item) -> GateSpec:
    if isinstance(item, GateSpec):
        return item
    if isinstance(item, str):
        return GateSpec(item)
    if isinstance(item, Sequence) and 1 <= len(item) <= 3:
        return GateSpec(*item)
    raise ConfigError(f"a layer to gate is a name, (conv, bn) or (conv, bn, reads); got {item!r}")


def gate(
    model: nn.Module,
    *,
    masks: int = 4,
    layers: Sequence | None = None,
    links: dict[str, str] | None = None,
) -> nn.Module:
    """A copy of ``model`` with chosen conv layers gated (the original is untouched).

    ``layers`` (the layer-selection hook for a user's conv net): a list of conv
    names, ``(conv, bn)`` pairs or :class:`GateSpec`; ``bn`` is the
    ``BatchNorm2d`` applied to the conv's output and nothing else (it moves into
    the gate and its old place becomes ``nn.Identity``), or ``None``.
    ``reads`` / ``links`` (``{conv: gated conv}``) say which convs read a gated
    layer's output through ReLU / pooling only, so their inactive input channels
    are zero: dynamic MACs and the sparse path use it. The copy records
    ``drib = {"masks", "gated": [...], "links": {...}}``.
    """
    specs = [_as_spec(s) for s in (default_layers(model) if layers is None else layers)]
    if not specs:
        raise ConfigError("no layers to gate")
    gated = copy.deepcopy(model)
    names = [s.conv for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"a layer is named twice in layers: {names}")
    for spec in specs:
        conv = get_layer(gated, spec.conv)
        if not isinstance(conv, nn.Conv2d):
            raise LayerError(f"layer {spec.conv!r} is a {type(conv).__name__}, not an nn.Conv2d")
        bn = None
        if spec.bn is not None:
            bn = get_layer(gated, spec.bn)
            if not isinstance(bn, nn.BatchNorm2d) or bn.num_features != conv.out_channels:
                raise LayerError(
                    f"layer {spec.bn!r} must be a BatchNorm2d of {conv.out_channels} channels "
                    f"after {spec.conv!r}, got {bn}"
                )
            set_layer(gated, spec.bn, nn.Identity())
        set_layer(gated, spec.conv, GatedConv(conv, bn, masks))
    from ...nets.resnet import CifarResNet

    found = {s.conv: s.reads for s in specs if s.reads}
    if layers is None and isinstance(model, CifarResNet):
        # conv2 of each block reads the gated conv1 (through bn1 and relu1)
        found = {s.conv.replace(".conv1", ".conv2"): s.conv for s in specs}
    found.update(links or {})
    for reader, producer in found.items():
        if producer not in names:
            raise ConfigError(f"{reader!r} reads {producer!r}, which is not a gated layer")
        get_layer(gated, reader)
    gated.drib = {
        "masks": masks,
        "gated": names,
        "links": found,
        "layers": [[s.conv, s.bn, s.reads] for s in specs],
    }
    if hasattr(model, "arch"):
        gated.arch = copy.deepcopy(model.arch)
    return gated


def gated_layers(model: nn.Module) -> dict[str, GatedConv]:
    """The model's gated layers by name, in forward order; LayerError if none."""
    found = {n: m for n, m in model.named_modules() if isinstance(m, GatedConv)}
    if not found:
        raise LayerError(
            f"{type(model).__name__} has no gated layers: "
            "build one with cnnlens.studies.drib.gate(model)"
        )
    return found


def set_mode(model: nn.Module, *, fixed: bool | None = None, tau: float | None = None) -> None:
    """Set every gate's ``fixed`` (argmax in training too) and Gumbel temperature ``tau``."""
    if tau is not None and not tau > 0:
        raise ConfigError(f"tau must be > 0, got {tau}")
    for g in gated_layers(model).values():
        if fixed is not None:
            g.fixed = fixed
        if tau is not None:
            g.tau = float(tau)


def gate_parameter_names(model: nn.Module) -> frozenset[str]:
    """Names of the heads' and masks' parameters (trained with Adam; the rest is the backbone)."""
    return frozenset(f"{n}.{p}" for n in gated_layers(model) for p in ("head.weight", "masks"))


@contextlib.contextmanager
def opened_gates(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every gate passes all channels unmasked (restored on exit)."""
    gates = list(gated_layers(model).values())
    try:
        for g in gates:
            g.opened = True
        yield model
    finally:
        for g in gates:
            g.opened = False

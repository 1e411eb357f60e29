"""The real sparse inference path of a gated network (issue 19, "Realising the savings").

The published gating code (Wang et al. 2020, FBS, channel gating) multiplies a
mask into a dense convolution's output, so it saves no time. Here a batch is
grouped by the chosen mask index and, per group, only the selected output
channels are computed, reading only the active input channels: a gated conv
runs with ``W[active_out][:, active_in]``, and the conv that reads it (ResNet's
``conv2``, VGG's next gated conv, the classifier head) with the matching
input slice. BatchNorm and the mask are folded into the sliced weights
(``mask * BN(conv x) = (mask s) conv x + mask (beta - mu s)``); the ungated
convs are BN-folded too, so compare against a BN-folded dense model as well.

Inference only (eval-mode statistics, argmax decisions), for cnnlens' CIFAR
ResNet and VGG gated by :func:`cnnlens.studies.drib.gate` with the default layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import LayerError
from .gate import GatedConv, gated_layers


def _fold(conv: nn.Conv2d, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    if isinstance(bn, nn.BatchNorm2d):
        s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        w = w * s[:, None, None, None]
        b = (b - bn.running_mean) * s + bn.bias.detach()
    return w.contiguous(), b.contiguous()


def _conv_args(conv: nn.Conv2d) -> dict:
    return {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation}


class _Gate:
    """Folded weights of one gated conv, sliced lazily per (input mask, chosen mask)."""

    def __init__(self, g: GatedConv) -> None:
        self.w, self.b = _fold(g.conv, g.bn)
        self.masks = g.masks.detach().clone()
        self.head = g.head.weight.detach().clone()
        self.args = _conv_args(g.conv)
        # a mask without a nonzero keeps channel 0 (times 0): convs need one channel
        self.active = [
            row.nonzero().flatten() if row.any() else row.new_zeros(1).long() for row in self.masks
        ]
        self._cache: dict = {}

    def choose(self, x: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
        head = self.head if cols is None else self.head[:, cols]
        return F.linear(F.relu(x).mean((2, 3)), head).argmax(1)

    def weights(self, i: int, cols: torch.Tensor | None, key) -> tuple[torch.Tensor, torch.Tensor]:
        if (i, key) not in self._cache:
            rows = self.active[i]
            g = self.masks[i, rows]
            w = self.w[rows] * g[:, None, None, None]
            if cols is not None:
                w = w[:, cols]
            self._cache[(i, key)] = (w.contiguous(), (self.b[rows] * g).contiguous())
        return self._cache[(i, key)]


def _groups(index: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """(mask index, rows) per group; rows ``None`` when the whole batch chose one index."""
    if len(index) == 1:
        return [(int(index[0]), None)]
    values = torch.unique(index)
    if len(values) == 1:
        return [(int(values[0]), None)]
    return [(int(v), (index == v).nonzero().flatten()) for v in values]


class SparseResNet(nn.Module):
    """Sparse inference of a gated CIFAR ResNet (gated ``conv1`` in each block)."""

    def __init__(self, gated: nn.Module) -> None:
        super().__init__()
        self.stem = _fold(gated.conv1, gated.bn1)
        self.blocks = []
        for stage in (gated.layer1, gated.layer2, gated.layer3):
            for block in stage:
                entry = {"shortcut": block.shortcut, "conv2": _fold(block.conv2, block.bn2)}
                if isinstance(block.shortcut, nn.Sequential):
                    conv, bn = block.shortcut
                    entry["shortcut"] = (_fold(conv, bn), _conv_args(conv))
                if isinstance(block.conv1, GatedConv):
                    entry["gate"] = _Gate(block.conv1)
                    w2 = entry["conv2"][0]
                    entry["conv2_cols"] = [w2[:, a].contiguous() for a in entry["gate"].active]
                else:
                    entry["conv1"] = (_fold(block.conv1, block.bn1), _conv_args(block.conv1))
                self.blocks.append(entry)
        self.head = gated.head

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.stem
        x = F.relu(F.conv2d(x, w, b, padding=1))
        for e in self.blocks:
            x = self._block(e, x)
        return self.head(x.mean((2, 3)))

    def _block(self, e: dict, x: torch.Tensor) -> torch.Tensor:
        w2, b2 = e["conv2"]
        sc = e["shortcut"]
        if isinstance(sc, tuple):
            (ws, bs), args = sc
            short = F.conv2d(x, ws, bs, **args)
        else:
            short = sc(x)
        if "gate" not in e:
            (w1, b1), args = e["conv1"]
            out = F.conv2d(F.relu(F.conv2d(x, w1, b1, **args)), w2, b2, padding=1)
            return F.relu(out + short)
        gate: _Gate = e["gate"]
        out = torch.empty_like(short)
        for i, rows in _groups(gate.choose(x, None)):
            xs = x if rows is None else x.index_select(0, rows)
            w1, b1 = gate.weights(i, None, None)
            h = F.relu(F.conv2d(xs, w1, b1, **gate.args))
            o = F.conv2d(h, e["conv2_cols"][i], b2, padding=1)
            if rows is None:
                out = o
            else:
                out.index_copy_(0, rows, o)
        return F.relu(out + short)


class SparseVGG(nn.Module):
    """Sparse inference of a gated CIFAR VGG (consecutive gated convs read compact inputs)."""

    def __init__(self, gated: nn.Module) -> None:
        super().__init__()
        self.steps: list = []
        mods = list(gated.features)
        for k, m in enumerate(mods):
            if isinstance(m, GatedConv):
                self.steps.append(("gate", _Gate(m)))
            elif isinstance(m, nn.Conv2d):
                bn = mods[k + 1] if isinstance(mods[k + 1], nn.BatchNorm2d) else None
                self.steps.append(("conv", (_fold(m, bn), _conv_args(m))))
            elif isinstance(m, nn.ReLU):
                self.steps.append(("fn", F.relu))
            elif isinstance(m, nn.MaxPool2d):
                self.steps.append(("fn", m))
        self.head = gated.head

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # groups: (rows into the batch or None = all, compact tensor, active channels or None)
        groups: list[tuple[torch.Tensor | None, torch.Tensor, object]] = [(None, x, None)]
        for kind, step in self.steps:
            if kind == "fn":
                groups = [(r, step(t), a) for r, t, a in groups]
            elif kind == "conv":
                (w, b), args = step
                groups = [(r, F.conv2d(t, w, b, **args), a) for r, t, a in groups]
            else:
                groups = [g for group in groups for g in self._gate(step, *group)]
        logits = None
        for rows, t, a in groups:
            feats = t.mean((2, 3))
            w = self.head.weight if a is None else self.head.weight[:, a[1]]
            out = F.linear(feats, w, self.head.bias)
            if rows is None:
                return out
            if logits is None:
                logits = out.new_empty(len(x), out.shape[1])
            logits.index_copy_(0, rows, out)
        return logits

    @staticmethod
    def _gate(gate: _Gate, rows, t, a):
        cols = None if a is None else a[1]
        key = None if a is None else a[0]
        out = []
        for i, sub in _groups(gate.choose(t, cols)):
            ts = t if sub is None else t.index_select(0, sub)
            r = sub if rows is None else (rows if sub is None else rows[sub])
            w, b = gate.weights(i, cols, key)
            out.append((r, F.conv2d(ts, w, b, **gate.args), (i, gate.active[i])))
        return out


def sparse_model(gated: nn.Module) -> nn.Module:
    """The sparse inference path of a gated CIFAR ResNet or VGG (weights read once; rebuild
    it after changing the gated model)."""
    from ...nets.resnet import CifarResNet
    from ...nets.vgg import CifarVGG

    gated_layers(gated)
    if isinstance(gated, CifarResNet):
        return SparseResNet(gated).eval()
    if isinstance(gated, CifarVGG):
        return SparseVGG(gated).eval()
    raise LayerError(
        f"the sparse path knows gated CIFAR ResNet and VGG, not {type(gated).__name__}; "
        "run the gated model itself (dense, masked) for other networks"
    )

"""Semantic channel pruning of the attribute network (paper 003, Fig. 3 and 7).

The C feature channels f_c (outputs of the extractor's last conv, read by every mask conv and
every head) are correlated over a data set with weights frozen (:class:`~.reading.ChannelRoles`,
Fig. 6). :class:`SemanticPruner` visits the channel pairs by descending |rho|; for each pair with
both channels still alive it prunes one, for all attribute heads: by default the one whose
producing filter (the last extractor conv) has the lower L1 norm. The paper says "lower" in its
method section and in Fig. 3's caption and "higher" in its experiment; ``prefer="higher"`` gives
the latter. Every pair of alive channels is visited once, so the order ends with one channel left.

:func:`prune_channels` makes a real, smaller network: the last conv and its BatchNorm lose the
output channels, every mask conv loses them as inputs and as outputs, every head loses the
weights; it equals the original network with f_c set to 0 (tested), and
:func:`cnnlens.macs` counts its smaller cost. Baselines: :func:`random_order` (seeded) and
:func:`l1_order` (lowest L1 norm first). :func:`pruning_sweep` measures the per-attribute
accuracy after pruning the first m channels of each order, for several m, running the shared
extractor once (its first three convs do not change) and the pruned last conv, masks and heads per
point.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ...chunking import run_chunked
from ...errors import InputError
from ...hooks import frozen
from ...placement import model_device
from .data import attribute_dataset
from .network import AttributeNetwork
from .objective import require_attribute_network
from .passes import CHUNK, accuracy_per_attribute, run_pass, subset_indices
from .reading import pearson

PREFER = ("lower", "higher")


def filter_l1(model: AttributeNetwork) -> torch.Tensor:
    """L1 norm of each filter of the last extractor conv: ``[C]`` float64."""
    return model.extractor.last_conv.weight.detach().double().abs().flatten(1).sum(1).cpu()


def semantic_order(correlation: torch.Tensor, l1: torch.Tensor, prefer: str = "lower") -> list[int]:
    """Channels in the order semantic pruning removes them (C - 1 of them; see the docstring)."""
    if prefer not in PREFER:
        raise InputError(f"prefer must be one of {PREFER}, got {prefer!r}")
    c = correlation.shape[0]
    if correlation.shape != (c, c) or l1.shape != (c,):
        raise InputError(
            f"correlation must be [C,C] and l1 [C]; got {tuple(correlation.shape)} and "
            f"{tuple(l1.shape)}"
        )
    i, j = torch.triu_indices(c, c, 1)
    strength = correlation[i, j].abs().double()
    # descending |rho|; ties by pair index, so the order is deterministic
    order = torch.argsort(-strength, stable=True)
    alive = [True] * c
    pruned: list[int] = []
    for p in order.tolist():
        a, b = int(i[p]), int(j[p])
        if not (alive[a] and alive[b]):
            continue
        lower = a if (l1[a], a) <= (l1[b], b) else b
        victim = lower if prefer == "lower" else (b if lower == a else a)
        alive[victim] = False
        pruned.append(victim)
        if len(pruned) == c - 1:
            break
    return pruned


def l1_order(model: AttributeNetwork) -> list[int]:
    """Channels by ascending filter L1 norm (plain smallest-norm pruning)."""
    return torch.argsort(filter_l1(model), stable=True).tolist()


def random_order(channels: int, seed: int) -> list[int]:
    """A seeded random permutation of the channels."""
    return torch.randperm(channels, generator=torch.Generator().manual_seed(int(seed))).tolist()


class SemanticPruner:
    """Correlation-driven channel pruning (scikit-learn style; see the module docstring).

    ``fit(model, data)`` sets ``channel_correlation_`` ``[C,C]``, ``filter_l1_`` ``[C]`` and
    ``order_`` (channels in pruning order); ``transform(model, m)`` returns a network with the
    first ``m`` of them removed.
    """

    def __init__(self, prefer: str = "lower", n: int | None = 1000) -> None:
        if prefer not in PREFER:
            raise InputError(f"prefer must be one of {PREFER}, got {prefer!r}")
        self.prefer, self.n = prefer, n

    def fit(self, model: AttributeNetwork, data, *, correlation=None) -> SemanticPruner:
        """``correlation``: the ``[C,C]`` channel correlation when already measured on ``data``
        (e.g. ``ChannelRoles.channel_correlation_``); otherwise one pass computes it."""
        require_attribute_network(model)
        if correlation is None:
            passed = run_pass(model, attribute_dataset(data), n=self.n)
            correlation = pearson(passed.pooled.T)
        c = model.feature_channels
        if tuple(correlation.shape) != (c, c):
            raise InputError(f"correlation must be [{c},{c}], got {tuple(correlation.shape)}")
        self.channel_correlation_ = correlation.double()
        self.filter_l1_ = filter_l1(model)
        self.order_ = semantic_order(self.channel_correlation_, self.filter_l1_, self.prefer)
        return self

    def transform(self, model: AttributeNetwork, m: int) -> AttributeNetwork:
        return prune_channels(model, self.order_[: int(m)])


def prune_channels(model: AttributeNetwork, channels) -> AttributeNetwork:
    """A smaller copy of ``model`` without the feature channels ``channels`` (see docstring)."""
    require_attribute_network(model)
    if not isinstance(model, AttributeNetwork):
        raise InputError(
            "channel pruning rebuilds the layers of a "
            "cnnlens.studies.channel_roles.AttributeNetwork "
            f"(extractor, masks, heads); {type(model).__name__} is not one"
        )
    c = model.feature_channels
    drop = sorted({int(ch) for ch in channels})
    if any(not 0 <= ch < c for ch in drop):
        raise InputError(f"channels to prune must lie in [0, {c}), got {drop}")
    if len(drop) >= c:
        raise InputError(f"cannot prune all {c} channels; keep at least one")
    keep = torch.tensor([ch for ch in range(c) if ch not in set(drop)], dtype=torch.long)
    k, c2 = model.num_attributes, len(keep)
    small = copy.deepcopy(model)
    device = model_device(model)
    keep_d = keep.to(device)
    conv, bn = small.extractor[-3], small.extractor[-2]
    new_conv = nn.Conv2d(conv.in_channels, c2, 3, padding=conv.padding, dilation=conv.dilation).to(
        device
    )
    new_conv.weight.data = conv.weight.data[keep_d].clone()
    new_conv.bias.data = conv.bias.data[keep_d].clone()
    new_bn = nn.BatchNorm2d(c2, eps=bn.eps, momentum=bn.momentum).to(device)
    for name in ("weight", "bias"):
        getattr(new_bn, name).data = getattr(bn, name).data[keep_d].clone()
    for name in ("running_mean", "running_var"):
        setattr(new_bn, name, getattr(bn, name)[keep_d].clone())
    new_bn.num_batches_tracked = bn.num_batches_tracked.clone()
    small.extractor[-3], small.extractor[-2] = new_conv, new_bn
    rows = (torch.arange(k, device=device)[:, None] * c + keep_d[None]).flatten()
    masks = nn.Conv2d(c2, k * c2, 3, padding=1).to(device)
    masks.weight.data = model.masks.weight.data[rows][:, keep_d].clone()
    masks.bias.data = model.masks.bias.data[rows].clone()
    small.masks = masks
    small.heads.weight = nn.Parameter(model.heads.weight.data[:, keep_d].clone())
    small.channels = [*model.channels[:-1], c2]
    small.kept_channels = [
        int(i) for i in torch.as_tensor(getattr(model, "kept_channels", range(c)))[keep]
    ]
    arch = getattr(model, "arch", None)
    if arch is not None:
        small.arch = {
            "name": arch["name"],
            "kwargs": {**arch["kwargs"], "channels": small.channels},
        }
    small.train(model.training)
    return small


@dataclass
class PruningCurve:
    """Accuracy after pruning the first ``counts[i]`` channels of an order.

    ``accuracy`` ``[S,P,K]``: per order (S: one, or one per random seed), count and attribute.
    """

    name: str
    counts: list[int]
    accuracy: torch.Tensor

    @property
    def mean_accuracy(self) -> torch.Tensor:
        """``[S,P]``: mean over attributes."""
        return self.accuracy.mean(-1)

    def to_dict(self) -> dict:
        mean = self.mean_accuracy
        return {
            "name": self.name,
            "counts": list(self.counts),
            "mean_accuracy": mean.mean(0).tolist(),
            "spread": (mean.std(0, unbiased=True) if mean.shape[0] > 1 else mean[0] * 0).tolist(),
            "per_order": mean.tolist(),
        }


@torch.no_grad()
def pruning_sweep(
    model: AttributeNetwork,
    data,
    orders: dict[str, list[list[int]]],
    counts: list[int],
    *,
    n: int | None = 500,
) -> dict[str, PruningCurve]:
    """Per-attribute accuracy after pruning the first m channels of each order, m in ``counts``.

    ``orders`` maps a curve name to one or more orders (e.g. several random seeds). The first
    three extractor stages run once per image (they are not pruned); each point builds the
    pruned network (:func:`prune_channels`) and runs its last conv, masks and heads.
    """
    require_attribute_network(model)
    data = attribute_dataset(data)
    c = model.feature_channels
    bad = [m for m in counts if not 0 <= int(m) < c]
    if bad:
        raise InputError(f"counts must lie in [0, {c}), got {bad}")
    idx = subset_indices(data, n)
    device = model_device(model)
    targets = data.attributes[idx].bool()
    stem = nn.Sequential(*list(model.extractor)[:-3])
    with frozen(model):
        hidden = run_chunked(
            lambda a, b: stem(data.tensors(idx[a:b])[0].to(device)), len(idx), CHUNK
        )
        curves = {}
        for name, order_list in orders.items():
            rows = []
            for order in order_list:
                row = []
                for m in counts:
                    small = prune_channels(model, order[: int(m)]).eval()
                    tail = nn.Sequential(*list(small.extractor)[-3:])
                    logits = run_chunked(
                        lambda a, b, s=small, t=tail: s.classify(t(hidden[a:b]))[0].cpu(),
                        len(idx),
                        CHUNK,
                    )
                    row.append(accuracy_per_attribute(logits, targets))
                rows.append(torch.stack(row))
            curves[name] = PruningCurve(name, [int(m) for m in counts], torch.stack(rows))
    return curves


def run_accuracy(model: nn.Module, data, n: int | None = 500) -> torch.Tensor:
    """Per-attribute accuracy ``[K]`` of ``model`` on the first ``n`` images of ``data``."""
    passed = run_pass(model, attribute_dataset(data), n=n)
    return accuracy_per_attribute(passed.logits, passed.targets)

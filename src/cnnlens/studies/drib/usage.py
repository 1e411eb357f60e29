"""Which channels each input used (paper 000, section 4.4, "interpretability of the decisions").

From the argmax decisions on a labelled data set: per gated layer, the
frequency with which each class chose each mask index ``[K, m]`` and used
each channel ``[K, C_out]`` (a channel is used when the chosen mask is
nonzero there), and the mask-index purity of each class: the share of its
inputs that chose the class's most frequent index (1 = every input of the
class takes the same path; ``1/m`` at best for a uniform choice).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...data.adapt import as_dataset
from ...errors import InputError
from .counting import decisions
from .gate import gated_layers


@dataclass
class Usage:
    """``index_freq`` / ``channel_freq``: layer -> ``[K, m]`` / ``[K, C]``; ``purity``: layer
    -> ``[K]``; ``counts`` ``[K]`` inputs per class; ``classes`` the class names."""

    index_freq: dict[str, torch.Tensor]
    channel_freq: dict[str, torch.Tensor]
    purity: dict[str, torch.Tensor]
    counts: torch.Tensor
    classes: list[str]

    def mean_purity(self) -> dict[str, float]:
        """Per layer, the purity averaged over the classes that occur."""
        present = self.counts > 0
        return {k: float(v[present].mean()) for k, v in self.purity.items()}

    def to_dict(self) -> dict:
        return {
            "classes": self.classes,
            "counts": self.counts.tolist(),
            "index_freq": {k: v.tolist() for k, v in self.index_freq.items()},
            "channel_freq": {k: v.tolist() for k, v in self.channel_freq.items()},
            "purity": {k: v.tolist() for k, v in self.purity.items()},
        }


def usage(model: nn.Module, data, *, labels: torch.Tensor | None = None) -> Usage:
    """Usage of mask indices and channels per class on ``data`` (any data set, or images
    with ``labels``)."""
    gates = gated_layers(model)
    if isinstance(data, torch.Tensor):
        if labels is None:
            raise InputError("usage() of a tensor of images needs labels=")
        x, y, classes = data, torch.as_tensor(labels).long(), None
    else:
        ds = as_dataset(data)
        x, y = ds.tensors()
        classes = list(ds.classes)
    if len(y) != len(x):
        raise InputError(f"{len(x)} images but {len(y)} labels")
    k = int(y.max()) + 1 if classes is None else len(classes)
    classes = classes or [str(i) for i in range(k)]
    chosen = decisions(model, x)
    counts = torch.bincount(y, minlength=k).double()
    per_class = counts.clamp_min(1)[:, None]
    index_freq, channel_freq, purity = {}, {}, {}
    for name, g in gates.items():
        m = g.masks.shape[0]
        joint = torch.zeros(k, m, dtype=torch.float64)
        ones = torch.ones(len(y), dtype=torch.float64)
        joint.index_put_((y, chosen[name]), ones, accumulate=True)
        index_freq[name] = (joint / per_class).float()
        active = (g.masks.detach().cpu() != 0).double()  # [m, C]
        channel_freq[name] = (joint @ active / per_class).float()
        purity[name] = (joint.amax(1) / per_class[:, 0]).float()
    return Usage(index_freq, channel_freq, purity, counts.long(), classes)

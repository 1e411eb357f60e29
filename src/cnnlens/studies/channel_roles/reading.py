"""Reading the attribute network: which channels each attribute uses (paper 003, Fig. 4-6, Table 4).

:class:`ChannelRoles` runs the trained network once over a data set (weights frozen) and keeps

- ``mask_means_`` ``[K,C]``: the mean value of each attribute's attention mask on each channel
  (over images and pixels): the attribute x channel grid of Fig. 5;
- ``top_channels_`` ``[K,top]``: per attribute the channels with the largest mean mask value
  (Fig. 4 shows their masks, :func:`channel_masks`);
- ``attribute_correlation_`` ``[K,K]``: Pearson correlation of the rows of ``mask_means_``
  (Table 4 lists the five most correlated attributes per attribute: ``most_correlated``);
- ``channel_correlation_`` ``[C,C]``: Pearson correlation of the C global-average-pooled
  feature channels over the images (Fig. 6; semantic pruning visits its pairs);
- ``label_correlation_`` ``[K,K]``: the correlation of the attributes' labels themselves, the
  ground truth the mask correlations can be checked against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...errors import InputError
from ...hooks import frozen
from ...placement import model_device
from .data import attribute_dataset
from .objective import require_attribute_network
from .passes import accuracy_per_attribute, run_pass


def pearson(rows: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the rows of ``rows`` ``[R,S]`` (float64; constant rows give 0)."""
    z = rows.double() - rows.double().mean(1, keepdim=True)
    norm = z.norm(dim=1, keepdim=True)
    z = torch.where(norm > 0, z / norm.clamp_min(1e-300), torch.zeros_like(z))
    corr = z @ z.T
    return corr.clamp(-1, 1)


@dataclass(frozen=True)
class CorrelatedAttributes:
    """For one attribute, the ``top`` others whose mask vectors correlate most (Table 4)."""

    attribute: str
    others: list[str]
    correlations: list[float]


class ChannelRoles:
    """What each channel does for each attribute (see the module docstring)."""

    def __init__(self, top: int = 3, n: int | None = 1000) -> None:
        if top < 1:
            raise InputError(f"top must be >= 1, got {top}")
        self.top, self.n = int(top), n

    def fit(self, model: nn.Module, data) -> ChannelRoles:
        require_attribute_network(model)
        data = attribute_dataset(data)
        passed = run_pass(model, data, n=self.n)
        self.attribute_names_ = list(getattr(model, "attribute_names", data.attribute_names))
        self.mask_means_ = passed.mask_means.double().mean(0)  # [K,C]
        k_top = min(self.top, self.mask_means_.shape[1])
        self.top_channels_ = self.mask_means_.topk(k_top, dim=1).indices
        self.attribute_correlation_ = pearson(self.mask_means_)
        self.channel_correlation_ = pearson(passed.pooled.T)
        self.label_correlation_ = pearson(passed.targets.double().T)
        self.accuracy_ = accuracy_per_attribute(passed.logits, passed.targets)
        self.n_images_ = int(passed.logits.shape[0])
        return self

    def most_correlated(self, top: int = 5) -> list[CorrelatedAttributes]:
        """Per attribute, the ``top`` most correlated other attributes (Table 4)."""
        corr, names = self.attribute_correlation_, self.attribute_names_
        out = []
        for k, name in enumerate(names):
            order = [j for j in corr[k].argsort(descending=True).tolist() if j != k][:top]
            out.append(
                CorrelatedAttributes(
                    name, [names[j] for j in order], [float(corr[k, j]) for j in order]
                )
            )
        return out

    def to_dict(self) -> dict:
        """Plain values, for JSON."""
        return {
            "attribute_names": list(self.attribute_names_),
            "n_images": self.n_images_,
            "accuracy": self.accuracy_.tolist(),
            "mask_means": self.mask_means_.tolist(),
            "top_channels": self.top_channels_.tolist(),
            "attribute_correlation": self.attribute_correlation_.tolist(),
            "label_correlation": self.label_correlation_.tolist(),
            "most_correlated": [
                {"attribute": c.attribute, "others": c.others, "correlations": c.correlations}
                for c in self.most_correlated()
            ],
        }


@torch.no_grad()
def channel_masks(
    model: nn.Module, x: torch.Tensor, attribute: int, channels: list[int] | torch.Tensor
) -> torch.Tensor:
    """The masks M^attribute of ``channels`` on images ``x``: ``[N,len(channels),H,W]`` (Fig. 4)."""
    require_attribute_network(model)
    if not 0 <= int(attribute) < model.num_attributes:
        raise InputError(f"attribute must lie in [0, {model.num_attributes}), got {attribute}")
    channels = torch.as_tensor(channels, dtype=torch.long)
    with frozen(model):
        masks = model.attention(model.features(x.to(model_device(model))))
    return masks[:, int(attribute), channels].cpu()

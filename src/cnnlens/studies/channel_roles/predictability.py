"""Human predictability, measured (beyond paper 003).

The paper defines human predictability as "easiness to predict the change of the inference
when perturbing the model" and gives no number. Here it is one: for a family of edits, the
change of each attribute's accuracy is predicted from what a person can read off the network
*before* running the edit, then measured; the predictability is the Spearman rank correlation
between predicted and measured changes over all edits.

Edit protocol (``seed`` draws everything):

- ``prune``: remove a random set S of feature channels for every attribute (sizes ``sizes``,
  ``repeats`` sets per size). Every attribute k gives one point.
- ``mask``: for one random attribute k, remove a random channel set S from that attribute only
  (attention network: M^k_c = 0 for c in S, i.e. its head ignores them; plain CNN: w_kc = 0).
  Only attribute k gives a point (the others cannot change, in either network).

Prediction: the share of attribute k's importance in S, ``sum_{c in S} I_kc / sum_c I_kc``,
with ``I_kc`` the mean attention-mask value of channel c for attribute k (over the images,
:class:`~.reading.ChannelRoles`) for the attention network, and ``|w_kc|``, the final-layer
weight, for the plain multi-label CNN of the same extractor
(:class:`~.network.PlainAttributeCNN`); for the attention network a second reading, the mask
value times ``|w_kc|`` of its head, is scored too (``others``). Measured: the accuracy of
attribute k before the edit minus after it, on the first ``n`` images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from scipy.stats import spearmanr

from ...chunking import run_chunked
from ...errors import InputError
from ...hooks import frozen
from ...placement import model_device
from .data import attribute_dataset
from .passes import CHUNK, accuracy_per_attribute, subset_indices

SIZES = (8, 16, 32, 64)
FAMILIES = ("prune", "mask")


@dataclass
class Predictability:
    """Predicted and measured accuracy drops per point and their rank correlations."""

    network: str
    family: list[str]  # per point
    predicted: torch.Tensor  # [P], the main predictor's
    measured: torch.Tensor  # [P]
    others: dict[str, torch.Tensor] = field(default_factory=dict)  # other predictors, [P] each

    def _kept(self, family: str | None) -> list[int]:
        return [i for i, f in enumerate(self.family) if family is None or f == family]

    def score(self, family: str | None = None, predictor: str | None = None) -> float:
        """Spearman correlation of predicted vs measured drops (one family, or all points;
        the main predictor, or one of ``others``)."""
        predicted = self.predicted if predictor is None else self.others[predictor]
        keep = self._kept(family)
        return _spearman(predicted[keep], self.measured[keep])

    def interval(
        self, family: str | None = None, *, level: float = 0.95, boots: int = 1000, seed: int = 0
    ) -> list[float]:
        """Percentile bootstrap interval of :meth:`score` (points resampled with replacement)."""
        keep = torch.as_tensor(self._kept(family), dtype=torch.long)
        draws = _resamples(len(keep), boots, seed)
        values = [_spearman(self.predicted[keep[d]], self.measured[keep[d]]) for d in draws]
        return _percentiles(values, level)

    def to_dict(self) -> dict:
        families = [f for f in FAMILIES if f in self.family]
        return {
            "network": self.network,
            "score": self.score(),
            "interval": self.interval(),
            "score_by_family": {f: self.score(f) for f in families},
            "interval_by_family": {f: self.interval(f) for f in families},
            "points_by_family": {f: len(self._kept(f)) for f in families},
            "other_predictors": {
                name: {
                    "score": self.score(None, name),
                    **{f: self.score(f, name) for f in families},
                }
                for name in self.others
            },
            "points": len(self.family),
            "values": {
                "family": list(self.family),
                "predicted": self.predicted.tolist(),
                "measured": self.measured.tolist(),
            },
        }


def paired_difference(
    first: Predictability,
    second: Predictability,
    family: str | None = None,
    *,
    level: float = 0.95,
    boots: int = 1000,
    seed: int = 0,
) -> dict:
    """``first.score() - second.score()`` with a paired bootstrap interval: both networks met
    the same edits (same ``seed``, channels and attributes), so point i of one is point i of
    the other and the points are resampled together."""
    if first.family != second.family:
        raise InputError("the two scores come from different edits; use the same seed and sizes")
    keep = torch.as_tensor(first._kept(family), dtype=torch.long)

    def difference(index: torch.Tensor) -> float:
        return _spearman(first.predicted[index], first.measured[index]) - _spearman(
            second.predicted[index], second.measured[index]
        )

    values = [difference(keep[d]) for d in _resamples(len(keep), boots, seed)]
    return {"difference": difference(keep), "interval": _percentiles(values, level)}


def _spearman(predicted: torch.Tensor, measured: torch.Tensor) -> float:
    if len(predicted) < 3:
        return float("nan")
    if predicted.unique().numel() < 2 or measured.unique().numel() < 2:
        return float("nan")  # a constant side: no ranking to compare
    return float(spearmanr(predicted.numpy(), measured.numpy()).statistic)


def _resamples(points: int, boots: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(int(seed))
    return [torch.randint(points, (points,), generator=gen) for _ in range(int(boots))]


def _percentiles(values: list[float], level: float) -> list[float]:
    finite = torch.tensor([v for v in values if v == v], dtype=torch.float64)
    if finite.numel() == 0:
        return [float("nan"), float("nan")]
    tail = (1 - level) / 2
    return torch.quantile(finite, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()


def check_edit_sizes(sizes, channels: int) -> list[int]:
    """Edit sizes as ints, each in [1, channels) (an edit keeps at least one channel); an
    InputError naming the values out of range, before any network is trained."""
    sizes = list(sizes)
    bad = [s for s in sizes if isinstance(s, bool) or int(s) != s or not 0 < s < channels]
    if bad or not sizes:
        raise InputError(f"edit sizes must lie in [1, {channels}), got {bad or sizes}")
    return [int(s) for s in sizes]


def _edits(channels: int, k: int, sizes, repeats: int, seed: int):
    gen = torch.Generator().manual_seed(int(seed))
    sizes = check_edit_sizes(sizes, channels)
    prune = [torch.randperm(channels, generator=gen)[:s] for s in sizes for _ in range(repeats)]
    mask = []
    for s in sizes:
        for _ in range(repeats):
            attr = int(torch.randint(k, (1,), generator=gen))
            mask.append((attr, torch.randperm(channels, generator=gen)[:s]))
    return prune, mask


def _share(importance: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``[K]``: each attribute's share of importance in the channels ``chosen``."""
    total = importance.sum(1).clamp_min(1e-12)
    return importance[:, chosen].sum(1) / total


def _reading(model, data, n: int | None):
    """The attribute data, the ``n`` images read, the model's device and their targets."""
    data = attribute_dataset(data)
    idx = subset_indices(data, n)
    return data, idx, model_device(model), data.attributes[idx].bool()


@torch.no_grad()
def attention_predictability(
    model, data, *, sizes=SIZES, repeats: int = 4, n: int | None = 300, seed: int = 0
) -> Predictability:
    """The score of an :class:`~.network.AttributeNetwork` (see the module docstring)."""
    from .pruning import prune_channels

    data, idx, device, targets = _reading(model, data, n)
    with frozen(model):

        def part(a, b):
            f = model.features(data.tensors(idx[a:b])[0].to(device))
            masks = model.attention(f)
            pooled = (masks * f.unsqueeze(1)).mean(dim=(-2, -1))
            return f.cpu(), pooled.cpu(), masks.mean(dim=(-2, -1)).cpu()

        f, pooled, mask_means = run_chunked(part, len(idx), CHUNK)
        importance = mask_means.double().mean(0)  # [K,C]
        # a second reading: the mask mass weighted by the head's |w_kc|
        weighted = importance * model.heads.weight.detach().cpu().double().abs()
        second = []
        base = accuracy_per_attribute(model.heads(pooled), targets)
        prune, mask = _edits(model.feature_channels, model.num_attributes, sizes, repeats, seed)
        family, predicted, measured = [], [], []
        for chosen in prune:
            small = prune_channels(model, chosen.tolist()).eval()
            kept = torch.as_tensor(small.kept_channels)
            logits = run_chunked(
                lambda a, b, s=small, kept=kept: s.classify(f[a:b, kept].to(device))[0].cpu(),
                len(idx),
                CHUNK,
            )
            drop = base - accuracy_per_attribute(logits, targets)
            family += ["prune"] * model.num_attributes
            predicted.append(_share(importance, chosen))
            second.append(_share(weighted, chosen))
            measured.append(drop)
        for attr, chosen in mask:
            weight = model.heads.weight.detach().cpu().clone()
            weight[attr, chosen] = 0
            logits = (pooled * weight).sum(-1) + model.heads.bias.detach().cpu()
            drop = base - accuracy_per_attribute(logits, targets)
            family.append("mask")
            predicted.append(_share(importance, chosen)[attr : attr + 1])
            second.append(_share(weighted, chosen)[attr : attr + 1])
            measured.append(drop[attr : attr + 1])
    return Predictability(
        "attention",
        family,
        torch.cat(predicted),
        torch.cat(measured),
        {"mask x |head weight|": torch.cat(second)},
    )


@torch.no_grad()
def plain_predictability(
    model, data, *, sizes=SIZES, repeats: int = 4, n: int | None = 300, seed: int = 0
) -> Predictability:
    """The score of a :class:`~.network.PlainAttributeCNN` (importance: ``|w_kc|``)."""
    data, idx, device, targets = _reading(model, data, n)
    with frozen(model):
        pooled = run_chunked(
            lambda a, b: model.forward_features(data.tensors(idx[a:b])[0].to(device)).cpu(),
            len(idx),
            CHUNK,
        )
    weight = model.head.weight.detach().cpu().double()
    bias = model.head.bias.detach().cpu().double()
    pooled = pooled.double()
    importance = weight.abs()
    base = accuracy_per_attribute(pooled @ weight.T + bias, targets)
    k, c = weight.shape
    prune, mask = _edits(c, k, sizes, repeats, seed)
    family, predicted, measured = [], [], []
    for chosen in prune:
        keep = torch.ones(c, dtype=torch.float64)
        keep[chosen] = 0
        drop = base - accuracy_per_attribute((pooled * keep) @ weight.T + bias, targets)
        family += ["prune"] * k
        predicted.append(_share(importance, chosen))
        measured.append(drop)
    for attr, chosen in mask:
        w = weight.clone()
        w[attr, chosen] = 0
        drop = base - accuracy_per_attribute(pooled @ w.T + bias, targets)
        family.append("mask")
        predicted.append(_share(importance, chosen)[attr : attr + 1])
        measured.append(drop[attr : attr + 1])
    return Predictability("plain", family, torch.cat(predicted), torch.cat(measured))

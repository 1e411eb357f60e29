"""The information plane during training (Shwartz-Ziv & Tishby 2017; paper 000, section 4.3).

:class:`InformationPlane` is a :func:`cnnlens.train.fit` callback: after each
epoch it runs the model on a fixed subset, global-average-pools the chosen
layers' outputs (``[N, C, H, W] -> [N, C]``) and estimates I(X;Z) and I(Z;Y)
per layer with two estimators, in bits:

- binning (Shwartz-Ziv & Tishby): each unit's value, after scaling the layer
  to [0, 1] by its minimum and maximum over the subset, falls in one of
  ``bins`` (30) equal bins; T is the tuple of bins. Since Z is a deterministic
  function of X and the subset's images are distinct, I(X;T) = H(T), and
  I(T;Y) = H(T) - sum_y p(y) H(T | Y=y) (:func:`binned_information`);
- the KDE upper bound of Saxe et al. (ICLR 2018, after Kolchinsky & Tracey):
  T = Z + N(0, s2 I), I(X;T) <= -1/N sum_i log 1/N sum_j exp(-|z_i - z_j|^2 / 2 s2)
  and I(T;Y) <= that bound minus sum_y p(y) times the same bound within class y
  (:func:`kde_information`), on the unscaled features; ``noise_variance`` is s2.

:func:`key_points` gives paper 000's Tables 3-4: the transition point (the
epoch of maximal I(X;Z)) and the convergence point, with the accuracy at each.
The paper does not define convergence; here it is the first epoch from which
I(X;Z) and I(Z;Y) both stay within ``tol`` (5 %) of their trajectory's range
of their last value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...chunking import run_chunked
from ...data import as_dataset
from ...errors import ConfigError, InputError
from ...hooks import capture_outputs, frozen
from ...placement import model_device

LN2 = math.log(2.0)


def _check(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if features.dim() != 2 or len(features) < 1:
        raise InputError(f"features must be [N, D] with N >= 1, got {tuple(features.shape)}")
    labels = torch.as_tensor(labels).reshape(-1)
    if len(labels) != len(features):
        raise InputError(f"{len(labels)} labels for {len(features)} feature rows")
    return features.detach().double().cpu(), labels.cpu()


def _entropy_of_rows(codes: torch.Tensor) -> float:
    """Entropy in bits of the empirical distribution of the rows of ``codes``."""
    _, counts = torch.unique(codes, dim=0, return_counts=True)
    p = counts.double() / len(codes)
    return float(-(p * p.log2()).sum())


def binned_information(
    features: torch.Tensor, labels: torch.Tensor, *, bins: int = 30
) -> tuple[float, float]:
    """``(I(X;T), I(T;Y))`` in bits with ``bins`` bins per unit after per-layer scaling."""
    if not isinstance(bins, int) or bins < 2:
        raise ConfigError(f"bins must be an integer >= 2, got {bins!r}")
    z, y = _check(features, labels)
    lo, hi = z.min(), z.max()
    scaled = (z - lo) / (hi - lo) if hi > lo else torch.zeros_like(z)
    codes = (scaled * bins).floor().clamp_(max=bins - 1).to(torch.int16)
    h = _entropy_of_rows(codes)
    conditional = 0.0
    for c in torch.unique(y):
        rows = codes[y == c]
        conditional += len(rows) / len(codes) * _entropy_of_rows(rows)
    return h, h - conditional


def _kde_bound(z: torch.Tensor, noise_variance: float) -> float:
    """-mean_i log mean_j exp(-|z_i - z_j|^2 / (2 s2)) in nats (Kolchinsky & Tracey's
    upper bound on the entropy of the Gaussian mixture, less the noise entropy)."""
    d2 = torch.cdist(z, z).pow(2)
    log_mean = torch.logsumexp(-d2 / (2 * noise_variance), dim=1) - math.log(len(z))
    return float(-log_mean.mean())


def kde_information(
    features: torch.Tensor, labels: torch.Tensor, *, noise_variance: float = 0.1
) -> tuple[float, float]:
    """``(I(X;T), I(T;Y))`` upper bounds in bits for T = Z + N(0, noise_variance I)."""
    if not noise_variance > 0:
        raise ConfigError(f"noise_variance must be > 0, got {noise_variance}")
    z, y = _check(features, labels)
    total = _kde_bound(z, noise_variance)
    conditional = 0.0
    for c in torch.unique(y):
        rows = z[y == c]
        conditional += len(rows) / len(z) * _kde_bound(rows, noise_variance)
    return total / LN2, (total - conditional) / LN2


ESTIMATORS = ("binning", "kde")


def estimator_text(estimator: str, *, bins: int = 30, noise_variance: float = 0.1) -> str:
    """The estimator and its parameters, as every figure and table states them."""
    if estimator == "binning":
        return f"binning, {bins} bins per unit after per-layer min-max scaling"
    return f"KDE upper bound (Saxe et al.), noise variance {noise_variance:g}"


@dataclass
class PlanePoint:
    """One epoch of one layer and estimator."""

    epoch: int
    layer: str
    estimator: str
    ixz: float
    izy: float
    accuracy: float
    val_accuracy: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class InformationPlane:
    """A :func:`cnnlens.train.fit` callback recording I(X;Z), I(Z;Y) per epoch.

    ``data``: any data :func:`~cnnlens.data.as_dataset` accepts; ``n`` images of it
    (drawn once with ``seed``) are the fixed subset. ``layers``: module names
    whose outputs are measured (global-average-pooled when spatial); ``None`` is
    the last spatial layer (:func:`cnnlens.layers.auto_layer`). ``points_``
    holds a :class:`PlanePoint` per epoch, layer and estimator. The callback adds
    ``ip_<estimator>_<layer>_ixz`` / ``_izy`` and ``ip_accuracy`` (on the subset)
    to the epoch's record.
    """

    def __init__(
        self,
        data,
        *,
        layers: Sequence[str] | None = None,
        n: int = 1000,
        bins: int = 30,
        noise_variance: float = 0.1,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        dataset = as_dataset(data)
        if n < 2:
            raise ConfigError(f"the subset needs n >= 2 images, got {n}")
        if not noise_variance > 0:
            raise ConfigError(f"noise_variance must be > 0, got {noise_variance}")
        if not isinstance(bins, int) or bins < 2:
            raise ConfigError(f"bins must be an integer >= 2, got {bins!r}")
        count = min(n, len(dataset))
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
        self.x, self.y = dataset.tensors(order[:count].sort().values.tolist())
        self.layers = None if layers is None else list(layers)
        self.bins, self.noise_variance, self.batch_size = bins, float(noise_variance), batch_size
        self.points_: list[PlanePoint] = []

    def features(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Pooled features ``[n, C]`` of each layer and the logits on the subset."""
        device = model_device(model)
        if self.layers is None:
            from ...layers import auto_layer

            self.layers = [auto_layer(model, self.x[:1].to(device))]
        layers = list(self.layers)

        def run(start: int, stop: int) -> tuple[torch.Tensor, ...]:
            with torch.no_grad(), capture_outputs(model, layers) as store:
                logits = model(self.x[start:stop].to(device))
            pooled = []
            for name in layers:
                out = store[name]
                pooled.append((out.flatten(2).mean(2) if out.dim() > 2 else out).float().cpu())
            return (*pooled, logits.float().cpu())

        with frozen(model):
            *parts, logits = run_chunked(run, len(self.x), self.batch_size)
        return dict(zip(layers, parts, strict=True)), logits

    def measure(self, model: nn.Module, epoch: int, val_accuracy: float | None = None):
        """Record the points of ``epoch`` (call it directly for an epoch-0 point)."""
        feats, logits = self.features(model)
        accuracy = float((logits.argmax(1) == self.y).double().mean())
        new = []
        for layer, z in feats.items():
            for estimator in ESTIMATORS:
                if estimator == "binning":
                    ixz, izy = binned_information(z, self.y, bins=self.bins)
                else:
                    ixz, izy = kde_information(z, self.y, noise_variance=self.noise_variance)
                new.append(PlanePoint(epoch, layer, estimator, ixz, izy, accuracy, val_accuracy))
        self.points_ += new
        return new

    def __call__(self, epoch: int, model: nn.Module, record: dict) -> dict:
        new = self.measure(model, epoch, record.get("val_accuracy"))
        extra: dict[str, float] = {"ip_accuracy": new[0].accuracy}
        for p in new:
            extra[f"ip_{p.estimator}_{p.layer}_ixz"] = p.ixz
            extra[f"ip_{p.estimator}_{p.layer}_izy"] = p.izy
        return extra

    def trajectory(self, layer: str, estimator: str) -> list[PlanePoint]:
        """The points of one layer and estimator, by epoch."""
        chosen = [p for p in self.points_ if p.layer == layer and p.estimator == estimator]
        return sorted(chosen, key=lambda p: p.epoch)

    def describe(self, estimator: str) -> str:
        """The estimator and its parameters (:func:`estimator_text`)."""
        return estimator_text(estimator, bins=self.bins, noise_variance=self.noise_variance)

    def to_dict(self) -> dict:
        return {
            "layers": self.layers,
            "n": len(self.x),
            "bins": self.bins,
            "noise_variance": self.noise_variance,
            "points": [p.to_dict() for p in self.points_],
        }


def key_points(points: Sequence[PlanePoint], *, tol: float = 0.05) -> dict[str, PlanePoint]:
    """``{"transition": ..., "convergence": ...}`` of one trajectory (see the module docstring)."""
    if not points:
        raise InputError("no information-plane points to read")
    points = sorted(points, key=lambda p: p.epoch)
    transition = max(points, key=lambda p: p.ixz)  # the first epoch of the maximum

    def settled(values: list[float]) -> int:
        span = max(values) - min(values)
        last = values[-1]
        index = len(values) - 1
        while index > 0 and abs(values[index - 1] - last) <= tol * span:
            index -= 1
        return index

    start = max(settled([p.ixz for p in points]), settled([p.izy for p in points]))
    return {"transition": transition, "convergence": points[start]}

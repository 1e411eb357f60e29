"""Class-specific influential features of a classifier's penultimate layer.

Paper 002 ("Decomposing the Deep", section 4.4, Algorithm 1): for every
training image take the indices of its ``k1`` largest penultimate features
by l1 norm (after the last ReLU every entry is >= 0, so a channel's l1 norm
is its value); per class, the histogram of those indices; the class's
influential set ``I_y`` is the ``k2`` most frequent indices. Ties are broken
towards the lower index, so the result is deterministic.

``k1="coverage"`` is the paper's other choice of k1 (section 4.4: "k1 which covers a
certain percentage (say 90) of contribution of the filters"): the smallest k1 whose top-k1
features hold, averaged over the training images, at least ``coverage`` of an image's
feature l1 mass. The paper reports that k1 = 5 gave 90 % on CIFAR-10.

``k2`` may exceed ``k1`` (the paper does not bound it): each image adds k1 distinct
indices to its class's histogram, so a class has at least k1 features of non-zero count;
when ``k2`` asks for more features than a class's histogram holds, the rest are its
never-counted features in order of their l1 mass over the class (then the lower index).
For ``k2 <= k1`` this fill never applies and the result is Algorithm 1's.
"""

from __future__ import annotations

import torch
from torch import nn

from ...analysis.features import Features, collect_features
from ...data.adapt import as_dataset
from ...data.base import ImageDataset
from ...errors import DataError, InputError
from ...params import Param, check_params

GROUPINGS = ("label", "predicted")

PARAMS = {
    "k1": Param(
        "int",
        5,
        min=1,
        choices=("coverage",),
        help="top features kept per image, or 'coverage': the smallest k1 that holds "
        "`coverage` of an image's l1 mass on average",
    ),
    "k2": Param("int", 5, min=1, help="influential features kept per class"),
    "coverage": Param(
        "float",
        0.9,
        min=0,
        max=1,
        open_min=True,
        help="share of the l1 mass k1='coverage' must hold (paper 002: 0.9)",
    ),
    "by": Param("str", "label", choices=GROUPINGS, help="group images by label or prediction"),
}


def coverage_curve(features: torch.Tensor) -> torch.Tensor:
    """``[m]``: entry ``k-1`` is the mean over rows of the share of a row's l1 mass held by
    its ``k`` largest entries (rows with no mass count as covered)."""
    magnitude = features.abs().double()
    ranked = torch.sort(magnitude, dim=1, descending=True).values.cumsum(1)
    total = ranked[:, -1:]
    share = torch.where(total > 0, ranked / total.clamp_min(1e-300), torch.ones_like(ranked))
    return share.mean(0)


def k1_for_coverage(features: torch.Tensor, coverage: float) -> int:
    """The smallest k1 whose top-k1 features hold at least ``coverage`` of a row's l1 mass,
    averaged over the rows of ``features`` ``[N,m]`` (paper 002, section 4.4)."""
    curve = coverage_curve(features)
    # a rounding margin, so that a constructed exact share (e.g. 0.9) counts as reached
    reached = (curve >= coverage - 1e-9).nonzero()
    return int(reached[0]) + 1 if len(reached) else int(curve.numel())


def top_indices(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest entries per row, ties broken towards the lower index."""
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return order[:, :k]


class InfluentialFeatures:
    """Algorithm 1 of paper 002 as a scikit-learn style estimator.

    ``InfluentialFeatures(k1=5, k2=5, by="label").fit(model, train_data)``
    (or ``k1="coverage", coverage=0.9``; the parameters are :data:`PARAMS`)
    learns ``k1_`` (the k1 used: ``k1``, or the one found by coverage),
    ``indices_`` ``[n_classes, k2]`` (each class's influential
    features, most frequent first), ``histograms_`` ``[n_classes, m]`` (how
    often each feature is among an image's top ``k1``), ``coverage_``
    ``[n_classes]`` (share of the class's feature l1 mass the chosen indices
    hold), ``counts_`` (images per class), ``n_features_in_`` (m),
    ``n_classes_`` and ``head_name_`` (the final layer it reads from).
    ``by="predicted"`` groups images by the model's prediction instead of
    their label.
    """

    def __init__(
        self, k1: int | str = 5, k2: int = 5, *, coverage: float = 0.9, by: str = "label"
    ) -> None:
        self.k1 = k1
        self.k2 = k2
        self.coverage = coverage
        self.by = by

    # --- fitting --------------------------------------------------------
    def _check_params(self, m: int | None = None) -> None:
        given = {"k1": self.k1, "k2": self.k2, "coverage": self.coverage, "by": self.by}
        check_params("InfluentialFeatures", given, PARAMS)
        if m is not None:
            for name in ("k1", "k2"):
                v = getattr(self, name)
                if isinstance(v, int) and v > m:
                    raise InputError(f"{name} must be <= the feature width m={m}, got {name}={v}")

    def fit(
        self,
        model: nn.Module,
        data: ImageDataset,
        *,
        batch_size: int | None = None,
        features: Features | None = None,
    ) -> InfluentialFeatures:
        """Learn the influential features of ``model`` from ``data`` (a training split).

        ``data`` is anything :func:`~cnnlens.data.as_dataset` accepts: a cnnlens data
        set, a torch ``Dataset`` or ``DataLoader``, or ``(x, y)`` tensors.

        ``features`` (from :func:`~cnnlens.analysis.features.collect_features`
        on the same data) skips the forward passes, e.g. in a k1/k2 sweep.
        """
        self._check_params()
        data = as_dataset(data)
        if features is None:
            features = collect_features(model, data, batch_size=batch_size)
        if features.logits.shape[1] != data.num_classes:
            raise InputError(
                f"the model predicts {features.logits.shape[1]} classes but {data.name} has "
                f"{data.num_classes}; fit on the data set the model was trained for"
            )
        groups = features.labels if self.by == "label" else features.predicted
        self.classes_ = list(data.classes)
        self.fit_features(features.features, groups, n_classes=data.num_classes)
        self.head_name_ = features.head_name
        return self

    def fit_features(
        self, features: torch.Tensor, groups: torch.Tensor, *, n_classes: int
    ) -> InfluentialFeatures:
        """Algorithm 1 on given penultimate ``features`` ``[N,m]`` grouped by class ``groups``."""
        if features.dim() != 2:
            raise InputError(f"features must be [N,m], got shape {tuple(features.shape)}")
        if groups.shape != features.shape[:1]:
            raise InputError(
                f"need one class per feature row: {features.shape[0]} rows, "
                f"groups of shape {tuple(groups.shape)}"
            )
        m = int(features.shape[1])
        self._check_params(m)
        groups = groups.to(features.device).long()
        counts = torch.bincount(groups, minlength=n_classes)
        if counts.numel() > n_classes:
            raise InputError(f"class ids must lie in [0, {n_classes}), got max {int(groups.max())}")
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            names = getattr(self, "classes_", None)
            shown = [names[i] if names and i < len(names) else i for i in empty]
            raise DataError(
                f"class(es) {shown} have no images grouped by {self.by!r}; every class needs "
                "at least one image to find its influential features"
            )
        magnitude = features.abs()  # l1 norm of each (scalar) feature
        k1 = self.k1 if self.k1 != "coverage" else k1_for_coverage(features, self.coverage)
        top = top_indices(magnitude, k1)  # [N, k1]
        hist = torch.zeros(n_classes, m, dtype=torch.long, device=features.device)
        rows = groups[:, None].expand_as(top)
        hist.index_put_(
            (rows.reshape(-1), top.reshape(-1)), torch.ones_like(top.reshape(-1)), accumulate=True
        )
        mass = torch.zeros(n_classes, m, dtype=magnitude.dtype, device=features.device)
        mass.index_add_(0, groups, magnitude)
        # counts first; never-counted features (only reached when k2 > k1) by class mass
        filler = mass.double() / mass.double().amax(1, keepdim=True).clamp_min(1e-300) / 2
        indices = top_indices(torch.where(hist > 0, hist.double(), filler), self.k2)  # [K, k2]
        chosen = mass.gather(1, indices).sum(1)
        self.k1_ = int(k1)
        self.indices_ = indices
        self.histograms_ = hist
        self.coverage_ = chosen / mass.sum(1).clamp_min(torch.finfo(mass.dtype).tiny)
        self.counts_ = counts
        self.n_features_in_ = m
        self.n_classes_ = n_classes
        return self

    # --- learned views --------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "indices_"):
            raise InputError("this InfluentialFeatures is not fitted yet; call fit(model, data)")

    @property
    def mask_(self) -> torch.Tensor:
        """``[n_classes, m]`` bool: True where a feature is influential for the class."""
        self._check_fitted()
        mask = torch.zeros(
            self.n_classes_, self.n_features_in_, dtype=torch.bool, device=self.indices_.device
        )
        return mask.scatter_(1, self.indices_, True)

    def to_dict(self) -> dict:
        """Plain JSON-able facts: parameters, indices, histograms, coverage."""
        self._check_fitted()
        classes = getattr(self, "classes_", [str(i) for i in range(self.n_classes_)])
        return {
            "method": "influential-features (Decomposing the Deep: Finding Class Specific "
            "Filters in Deep CNNs, Badola et al., Algorithm 1)",
            "k1": self.k1_,
            "k1_mode": "coverage" if self.k1 == "coverage" else "fixed",
            "coverage_target": self.coverage if self.k1 == "coverage" else None,
            "k2": self.k2,
            "by": self.by,
            "n_features": self.n_features_in_,
            "head": getattr(self, "head_name_", None),
            "classes": {
                name: {
                    "indices": self.indices_[c].tolist(),
                    "coverage": float(self.coverage_[c]),
                    "images": int(self.counts_[c]),
                    "histogram": self.histograms_[c].tolist(),
                }
                for c, name in enumerate(classes)
            },
        }

    def __repr__(self) -> str:
        cover = f", coverage={self.coverage}" if self.k1 == "coverage" else ""
        return f"InfluentialFeatures(k1={self.k1!r}, k2={self.k2}{cover}, by={self.by!r})"

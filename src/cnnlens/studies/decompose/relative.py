"""Relative accuracy of a decomposed final layer and the k1/k2 sweep.

Paper 002 (section 5.2.1, Figure 3): ``r_A = A_d / A_f`` where ``A_f`` is the
full network's test accuracy and ``A_d`` the accuracy with the decomposed
final layer. Both are computed from the test set's penultimate features
collected once, so a whole k1/k2 grid costs one pass over each split.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...analysis.features import Features, collect_features
from ...data.adapt import as_dataset
from ...data.base import ImageDataset
from ...errors import InputError
from ...layers import get_layer
from .decomposed import DecomposedHead
from .influential import InfluentialFeatures


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels.to(logits.device)).float().mean())


def decomposed_logits(
    model: nn.Module, influential: InfluentialFeatures, features: torch.Tensor
) -> torch.Tensor:
    """Logits of the decomposed head (initialised from ``model``'s final layer) on ``features``."""
    linear = get_layer(model, influential.head_name_)
    head = DecomposedHead.from_linear(linear, influential.indices_)
    with torch.no_grad():
        return head(features)


def relative_accuracy(
    model: nn.Module,
    influential: InfluentialFeatures,
    test: ImageDataset | Features,
    *,
    batch_size: int | None = None,
) -> dict:
    """``A_f``, ``A_d``, ``r_A = A_d / A_f`` and the final-layer cost before and after.

    ``test`` is its :class:`Features` or any data :func:`~cnnlens.data.as_dataset` accepts.
    """
    feats = (
        test if isinstance(test, Features) else collect_features(model, test, batch_size=batch_size)
    )
    a_f = accuracy(feats.logits, feats.labels)
    a_d = accuracy(decomposed_logits(model, influential, feats.features), feats.labels)
    linear = get_layer(model, influential.head_name_)
    return {
        "k1": influential.k1_,
        "k2": influential.k2,
        "A_f": a_f,
        "A_d": a_d,
        "r_A": a_d / a_f if a_f > 0 else float("nan"),
        "macs_full": int(linear.in_features * linear.out_features),
        "macs_decomposed": int(influential.indices_.numel()),
    }


def sweep(
    model: nn.Module,
    train: ImageDataset | Features,
    test: ImageDataset | Features,
    *,
    k1s: Sequence[int] = (1, 2, 3, 5, 8, 10, 15, 20),
    k2s: Sequence[int] | None = None,
    by: str = "label",
    n_classes: int | None = None,
    batch_size: int | None = None,
) -> list[dict]:
    """One row (k1, k2, A_f, A_d, r_A, coverage) per pair with ``k2 <= k1`` (paper 002, Fig. 3).

    ``train`` and ``test`` are :class:`Features` or any data :func:`~cnnlens.data.as_dataset`
    accepts.
    """
    k2s = list(k2s) if k2s is not None else list(k1s)
    if not k1s or not k2s:
        raise InputError("the sweep needs at least one k1 and one k2")
    if isinstance(train, Features):
        if n_classes is None:
            raise InputError("pass n_classes when the training split is given as Features")
        train_feats = train
    else:
        train = as_dataset(train)
        n_classes = train.num_classes
        train_feats = collect_features(model, train, batch_size=batch_size)
    test_feats = (
        test if isinstance(test, Features) else collect_features(model, test, batch_size=batch_size)
    )
    groups = train_feats.labels if by == "label" else train_feats.predicted
    rows = []
    for k1 in k1s:
        for k2 in k2s:
            if k2 > k1:
                continue
            est = InfluentialFeatures(k1=k1, k2=k2, by=by)
            est.fit_features(train_feats.features, groups, n_classes=n_classes)
            est.head_name_ = train_feats.head_name
            row = relative_accuracy(model, est, test_feats)
            row["coverage"] = float(est.coverage_.mean())
            rows.append(row)
    return rows


def sweep_grid(rows: list[dict], key: str = "r_A") -> tuple[list[int], list[int], torch.Tensor]:
    """The sweep as a ``[len(k1s), len(k2s)]`` grid of ``key`` (NaN where ``k2 > k1``)."""
    k1s = sorted({r["k1"] for r in rows})
    k2s = sorted({r["k2"] for r in rows})
    grid = torch.full((len(k1s), len(k2s)), float("nan"))
    for r in rows:
        grid[k1s.index(r["k1"]), k2s.index(r["k2"])] = r[key]
    return k1s, k2s, grid

"""The result every metric returns: per-image values, optional curves, a table row view."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..types import Curve


@dataclass
class Result:
    """Scores of one metric for a batch of explanations.

    ``values`` ``[N]`` (one number per image, NaN where the metric does not
    apply, e.g. an image filtered out by ``max_area``); ``curves`` ``[N,S]``
    and their abscissa ``x`` ``[S]`` for curve metrics; ``extras`` further
    per-image tensors (``[N]`` or ``[N,S]``); ``params`` the settings used.
    """

    metric: str
    values: torch.Tensor
    curves: torch.Tensor | None = None
    x: torch.Tensor | None = None
    params: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    higher_is_better: bool = True

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def mean(self) -> float:
        """Mean over images, ignoring NaN (NaN when no image has a value)."""
        v = self.values.detach().double()
        v = v[~torch.isnan(v)]
        return float(v.mean()) if v.numel() else math.nan

    @property
    def ci95(self) -> float:
        """Half width of the normal-approximation 95 % confidence interval of :attr:`mean`."""
        return ci95(self.values)

    def curve(self) -> Curve:
        """The curves as a :class:`cnnlens.Curve` (``auc`` = ``values``)."""
        if self.curves is None:
            raise ValueError(f"metric {self.metric!r} has no curves")
        x = self.x if self.x is not None else torch.arange(self.curves.shape[1])
        return Curve(x=x, y=self.curves, auc=self.values)

    def to_rows(
        self, *, method: str | None = None, images: list[int] | torch.Tensor | None = None
    ) -> list[dict[str, Any]]:
        """One dict per image: ``image``, ``method``, ``metric``, ``value``."""
        idx = list(range(len(self))) if images is None else [int(i) for i in images]
        values = self.values.detach().double().cpu().tolist()
        return [
            {"image": i, "method": method or "", "metric": self.metric, "value": v}
            for i, v in zip(idx, values, strict=True)
        ]

    rows = to_rows


def ci95(values: torch.Tensor) -> float:
    """1.96 standard errors of the mean of the non-NaN ``values`` (0 for one value)."""
    v = values.detach().double().flatten()
    v = v[~torch.isnan(v)]
    if v.numel() < 2:
        return 0.0 if v.numel() == 1 else math.nan
    return float(1.96 * v.std(unbiased=True) / math.sqrt(v.numel()))

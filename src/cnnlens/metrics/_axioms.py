"""Shared steps of the metrics that explain again (random logit, input invariance): the
method as ``f(model, x, target) -> maps`` and the original's method, settings and targets
taken from an :class:`~cnnlens.types.Explanation`."""

from __future__ import annotations

import torch

from ..errors import InputError
from ..types import Explanation
from ._common import as_maps
from .sanity import Explainer, _explainer


def explainer(name: str, maps, method, method_params: dict | None) -> tuple[Explainer, dict]:
    """``f(model, x, target) -> [N,1,H,W] maps`` for ``method`` (a registered name or a
    callable; default: the method of ``maps`` when it is an Explanation) and its settings."""
    if isinstance(maps, Explanation):
        method = method if method is not None else maps.method
        method_params = method_params if method_params is not None else dict(maps.params)
    if method is None:
        raise InputError(f"{name} needs method= (a registered method's name or a callable)")
    run = _explainer(method, dict(method_params or {}))

    def again(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return as_maps(run(model, x, target), like=x)

    return again, {"method": method if isinstance(method, str) else "callable"}

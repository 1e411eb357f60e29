"""Sanity check by cascading model randomisation (Adebayo et al., NeurIPS 2018).

On a deep copy of the model (the original is never touched), layers are
re-initialised from the top (the classifier) down, cumulatively; after each
step the maps are computed again and compared with the original maps by
Spearman rank correlation (of absolute values, Adebayo's main variant) and
SSIM. Convolution and linear layers are re-initialised with their own
``reset_parameters`` under a fixed seed; normalisation layers keep their
parameters. Layers are grouped per block by default (``layer3.2``, ``head``).

A method whose maps do not change when the weights they explain are
destroyed fails: ``extras["fails"]`` is 1 for every image when the mean
Spearman correlation after the whole cascade is still >= ``threshold``
(0.5). ``values`` are the correlations after randomising the top layer;
``curves`` the correlations along the cascade, ``extras["ssim"]`` likewise.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ..errors import InputError
from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import Param
from ..placement import model_device
from ..types import Explanation
from ._common import as_maps, check_inputs, check_model
from .registry import Metric, Scoring, register
from .result import Result
from .similarity import spearman, ssim

Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


PARAMS = {
    "granularity": Param("str", "block", choices=("block", "layer")),
    "threshold": Param("float", 0.5, min=-1, max=1),
    "seed": Param("int", 0),
}


def cascade_groups(model: nn.Module, *, granularity: str = "block") -> list[tuple[str, list[str]]]:
    """Re-initialisable layers grouped for the cascade, top (output side) first."""
    names = [
        name
        for name, m in model.named_modules()
        if hasattr(m, "reset_parameters")
        and not list(m.children())
        and not isinstance(m, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm)
        and any(True for _ in m.parameters(recurse=False))
    ]
    if granularity not in ("block", "layer"):
        raise InputError(f"granularity must be 'block' or 'layer', got {granularity!r}")
    groups: list[tuple[str, list[str]]] = []
    for name in names:
        key = name if granularity == "layer" else ".".join(name.split(".")[:2])
        if groups and groups[-1][0] == key:
            groups[-1][1].append(name)
        else:
            groups.append((key, [name]))
    return groups[::-1]


def _explainer(method, params: dict) -> Explainer:
    if callable(method):
        return method
    from ..attribution import explain

    def run(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return explain(model, x, method=method, target=target, **params).maps

    return run


@with_autograd
def randomisation_check(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    method: str | Explainer | None = None,
    method_params: dict | None = None,
    granularity: str = "block",
    threshold: float = 0.5,
    seed: int = 0,
) -> Result:
    """Cascading randomisation; ``method`` is a registered name or ``f(model, x, target) -> maps``.

    When ``maps`` is an :class:`Explanation`, its method, parameters and
    targets are reused unless given. The targets stay those of the original
    model (the explained class does not move with the randomised model).
    """
    model = check_model(model)
    inputs = check_inputs(inputs, model).to(model_device(model))
    if isinstance(maps, Explanation):
        method = method if method is not None else maps.method
        method_params = method_params if method_params is not None else dict(maps.params)
        target = maps.target if target is None else target
    if method is None:
        raise InputError("randomisation_check needs method= (a registered name or a callable)")
    original = as_maps(maps, like=inputs)
    explainer = _explainer(method, dict(method_params or {}))
    from ..attribution.base import resolve_target

    with frozen(model):
        target, _ = resolve_target(model, inputs, target)
    work = copy.deepcopy(model).eval()
    groups = cascade_groups(work, granularity=granularity)
    if not groups:
        raise InputError("the model has no layer with parameters to randomise")
    rho, sim = [], []
    gen_state = torch.random.get_rng_state()
    try:
        for i, (_key, names) in enumerate(groups):
            torch.manual_seed(seed + i)
            with torch.no_grad():
                for name in names:
                    work.get_submodule(name).reset_parameters()
            new = as_maps(explainer(work, inputs, target), like=inputs)
            rho.append(spearman(original.abs(), new.abs()))
            sim.append(ssim(original.abs(), new.abs()))
    finally:
        torch.random.set_rng_state(gen_state)
    curves = torch.stack(rho, 1)
    ssims = torch.stack(sim, 1)
    final = float(torch.nanmean(curves[:, -1])) if curves.numel() else float("nan")
    fails = torch.full((curves.shape[0],), float(final >= threshold))
    return Result(
        metric="randomisation",
        values=curves[:, 0],
        curves=curves,
        x=torch.arange(1, len(groups) + 1, dtype=torch.float32),
        params={
            "layers": [k for k, _ in groups],
            "granularity": granularity,
            "threshold": threshold,
            "seed": seed,
        },
        extras={"ssim": ssims, "fails": fails, "final_spearman": curves[:, -1]},
        higher_is_better=False,
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    n = s.x.shape[0]
    k = min(s.sanity_rows, n)
    vals = torch.full((n,), float("nan"))
    final = torch.full((n,), float("nan"))
    out = {}
    if k > 0:
        settings.setdefault("seed", s.seed)
        r = randomisation_check(s.model, s.x[:k], s.maps[:k], s.target[:k], method=s.fn, **settings)
        vals[:k], final[:k] = r.values.cpu(), r.extras["final_spearman"].cpu()
        out["curve"] = torch.cat(
            [r.curves.cpu(), torch.full((n - k, r.curves.shape[1]), float("nan"))]
        )
    return {**out, "values": vals, "randomisation-final/values": final}


register(
    Metric(
        "randomisation", "Spearman original vs top-layer-randomised maps (lower is better)",
        _score, lower_is_better=True, needs=("model", "method"), params=PARAMS, order=80,
        also={"randomisation-final": "Spearman after randomising every layer (lower is better)"},
        family="randomisation",
    )
)  # fmt: skip

"""Max-sensitivity (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations",
NeurIPS 2019, Sec. 3, ``SENS_MAX``; Captum's ``sensitivity_max``).

``SENS_MAX(Phi, f, x, r) = max_{||y - x||_inf <= r} ||Phi(f, y) - Phi(f, x)|| / ||Phi(f, x)||``,
estimated by Monte Carlo: ``samples`` inputs ``y = x + u`` with ``u`` uniform in
the L-inf ball of radius ``radius x (max(x) - min(x))`` (per image), every one
re-explained for the image's target, Frobenius norms of the maps. Where the
map of ``x`` is all zero the denominator is 1 (Captum's convention). Lower is
better: a robust explanation barely moves under imperceptible noise.

Noise sample ``j`` is the same uniform draw for every image (from ``seed`` alone,
:class:`cnnlens.seeding.Draws`), scaled to each image's ball, so an image's score
does not depend on the other images of the call or the chunk size; the perturbed
copies of a chunk are explained in one call and the chunks run through
:func:`cnnlens.chunking.run_chunked`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..attribution.base import resolve_target
from ..chunking import chunk_size, run_chunked
from ..errors import InputError
from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import Param
from ..placement import model_device
from ..seeding import Draws
from ..types import Explanation
from ._common import as_maps, check_inputs, check_model
from .registry import Metric, Scoring, register
from .result import Result

Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


PARAMS = {
    "radius": Param("float", 0.02, min=0, open_min=True),
    "samples": Param("int", 10, min=1),
    "seed": Param("int", 0),
}


def explainer(method, params: dict) -> Explainer:
    """``f(model, x, target) -> maps [N,1,H,W]`` for a registry name or a callable."""
    if isinstance(method, str):
        from ..attribution import explain, get

        get(method)  # unknown names fail here, with close matches

        def run(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return explain(model, x, method=method, target=target, **params).maps

        return run
    if callable(method):
        if params:
            raise InputError(
                "method parameters apply to a registered method name only; "
                f"got {sorted(params)} with a callable method"
            )

        def call(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            out = method(model, x, target)
            return out.maps if isinstance(out, Explanation) else out

        return call
    raise InputError(
        f"method must be a registered name or a callable (model, x, target) -> maps, "
        f"got {type(method).__name__}"
    )


@with_autograd
def max_sensitivity(
    model: nn.Module,
    inputs: torch.Tensor,
    maps=None,
    target: int | torch.Tensor | None = None,
    *,
    method: str | Explainer | None = None,
    radius: float = 0.02,
    samples: int = 10,
    seed: int = 0,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
    **method_params,
) -> Result:
    """Per image ``max_s ||e(x + u_s) - e(x)||_F / ||e(x)||_F`` over ``samples`` noisy copies.

    ``method`` is a registry name for :func:`cnnlens.explain` (its
    hyperparameters as further keywords) or a callable ``(model, x, target)
    -> maps``; when ``maps`` is an :class:`Explanation` its method,
    parameters and targets are the defaults. ``maps`` (the explanation of
    ``inputs``) is computed when ``None``. ``radius`` is a fraction of each
    image's value range. ``extras["samples"]`` holds every ratio ``[N,S]``.
    """
    model = check_model(model)
    inputs = check_inputs(inputs, model).to(model_device(model))
    if isinstance(maps, Explanation):
        if method is None:
            method = maps.method
            method_params = {**maps.params, **method_params}
        target = maps.target if target is None else target
    if method is None:
        raise InputError("max_sensitivity needs method= (a registered name or a callable)")
    if (
        not isinstance(radius, int | float)
        or isinstance(radius, bool)
        or not math.isfinite(radius)
        or radius <= 0
    ):
        raise InputError(
            f"radius must be a number > 0 (fraction of the value range), got {radius!r}"
        )
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise InputError(f"samples must be a positive integer, got {samples!r}")
    explain_fn = explainer(method, dict(method_params))
    n = inputs.shape[0]
    device = inputs.device
    with frozen(model):
        target, _ = resolve_target(model, inputs, target)
        if maps is None:
            maps = explain_fn(model, inputs, target)
        base = as_maps(maps, like=inputs)
        norm = base.flatten(1).norm(dim=1)
        norm = torch.where(norm == 0, torch.ones_like(norm), norm)
        flat = inputs.flatten(1)
        scale = (radius * (flat.amax(1) - flat.amin(1))).view(-1, 1, 1, 1)
        draws = Draws(
            int(seed), samples, inputs.shape[1:], device=device, dtype=inputs.dtype,
            kind="uniform",
        )  # fmt: skip
        size = chunk_size(model, inputs, backward=True, batch_size=batch_size, memory=memory)

        def run(a: int, b: int) -> torch.Tensor:
            j = torch.arange(a, b, device=device)
            img, u = j // samples, draws(j % samples)
            noisy = inputs[img] + (2 * u - 1) * scale[img]
            moved = as_maps(explain_fn(model, noisy, target[img]), like=noisy)
            return (moved - base[img]).flatten(1).norm(dim=1) / norm[img]

        ratios = run_chunked(run, n * samples, size, desc=desc).view(n, samples)
    return Result(
        metric="max_sensitivity",
        values=ratios.amax(1),
        params={
            "method": method if isinstance(method, str) else getattr(method, "__name__", "custom"),
            "radius": float(radius),
            "samples": samples,
            "seed": seed,
        },
        extras={"samples": ratios, "target": target},
        higher_is_better=False,
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    settings.setdefault("seed", s.seed)
    r = max_sensitivity(
        s.model,
        s.x,
        s.maps,
        s.target,
        method=s.fn,
        batch_size=s.batch_size,
        memory=s.memory,
        **settings,
    )
    return {"values": r.values}


register(
    Metric(
        "max-sensitivity", "max relative map change under 2 % uniform noise (lower is better)",
        _score, lower_is_better=True, needs=("model", "method"), params=PARAMS,
        default=False, order=110,
        family="robustness",
    )
)  # fmt: skip

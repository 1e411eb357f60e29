"""Max-sensitivity (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations",
NeurIPS 2019, Sec. 3, ``SENS_MAX``; Captum's ``sensitivity_max``).

Average sensitivity (same paper, ``SENS_AVG``): the mean of the same ratios.

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

from ..errors import InputError
from ..gradmode import with_autograd
from ..params import Param
from ..seeding import Draws
from ..types import Explanation
from ._robustness import Perturbed, explain_perturbed, positive_number
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


def _ratios(
    model, inputs, maps, target, method, method_params, *, name, radius, samples, seed,
    batch_size, memory, desc,
):  # fmt: skip
    """``||e(x + u_s) - e(x)||_F / ||e(x)||_F`` ``[N,S]``, the targets and the method's name."""
    if (
        not isinstance(radius, int | float)
        or isinstance(radius, bool)
        or not math.isfinite(radius)
        or radius <= 0
    ):
        raise InputError(
            f"radius must be a number > 0 (fraction of the value range), got {radius!r}"
        )
    positive_number("samples", samples, integer=True)
    state = {}

    def perturb(x: torch.Tensor, img: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if "draws" not in state:
            flat = x.flatten(1)
            state["scale"] = (radius * (flat.amax(1) - flat.amin(1))).view(-1, 1, 1, 1)
            state["draws"] = Draws(
                int(seed), samples, x.shape[1:], device=x.device, dtype=x.dtype, kind="uniform"
            )
        return x[img] + (2 * state["draws"](s) - 1) * state["scale"][img]

    def score(p: Perturbed) -> torch.Tensor:
        norm = p.base.flatten(1).norm(dim=1)
        norm = torch.where(norm == 0, torch.ones_like(norm), norm)
        return (p.maps - p.base[p.img]).flatten(1).norm(dim=1) / norm[p.img]

    return explain_perturbed(
        model, inputs, maps, target, method, method_params, name=name, samples=samples,
        perturb=perturb, score=score, batch_size=batch_size, memory=memory, desc=desc,
    )  # fmt: skip


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
    return _result(
        "max_sensitivity", model, inputs, maps, target, method, method_params, radius=radius,
        samples=samples, seed=seed, batch_size=batch_size, memory=memory, desc=desc,
    )  # fmt: skip


@with_autograd
def avg_sensitivity(
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
    """Per image ``mean_s ||e(x + u_s) - e(x)||_F / ||e(x)||_F``: Yeh et al.'s ``SENS_AVG``
    (the expectation over the uniform ball, Sec. 3), with the same noise draws, relative
    norm and arguments as :func:`max_sensitivity`."""
    return _result(
        "avg_sensitivity", model, inputs, maps, target, method, method_params, radius=radius,
        samples=samples, seed=seed, batch_size=batch_size, memory=memory, desc=desc,
    )  # fmt: skip


def _result(name, model, inputs, maps, target, method, method_params, **kw) -> Result:
    ratios, target, label = _ratios(
        model, inputs, maps, target, method, dict(method_params), name=name, **kw
    )
    reduce = ratios.amax(1) if name == "max_sensitivity" else ratios.mean(1)
    params = {"method": label, "radius": float(kw["radius"]), "samples": kw["samples"]}
    return Result(
        metric=name,
        values=reduce,
        params={**params, "seed": kw["seed"]},
        extras={"samples": ratios, "target": target},
        higher_is_better=False,
    )


def _score(f):
    def score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
        settings.setdefault("seed", s.seed)
        r = f(
            s.model, s.x, s.maps, s.target, method=s.fn, batch_size=s.batch_size,
            memory=s.memory, **settings,
        )  # fmt: skip
        return {"values": r.values}

    return score


register(
    Metric(
        "max-sensitivity", "max relative map change under 2 % uniform noise (lower is better)",
        _score(max_sensitivity), lower_is_better=True, needs=("model", "method"), params=PARAMS,
        default=False, order=110,
        family="robustness",
    )
)  # fmt: skip
register(
    Metric(
        "avg-sensitivity",
        "mean relative map change under 2 % uniform noise (Yeh et al. 2019; lower is better)",
        _score(avg_sensitivity), lower_is_better=True, needs=("model", "method"), params=PARAMS,
        default=False, order=310, family="robustness",
    )
)  # fmt: skip

"""Infidelity (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS
2019, eq. 1; Captum's ``infidelity``).

``INFD(Phi, f, x) = E_I[(I^T Phi(f, x) - (f(x) - f(x - I)))^2]`` with Gaussian
perturbations ``I ~ N(0, noise^2)`` per input element, ``f`` the target's logit
(Captum's convention with the model as forward function; ``score=
"probability"`` uses the softmax probability) and the ``[N,1,H,W]`` map
broadcast over the channels (``I^T Phi = sum_{c,h,w} I_chw Phi_hw``).
Estimated with ``samples`` perturbations per image. Lower is better.

``normalize=True`` (the default; the paper's official code, Captum's
``normalize=True``) first scales the map by the least-squares factor
``beta = E[I^T Phi (f(x) - f(x - I))] / E[(I^T Phi)^2]``, so the score does not
depend on the map's overall scale, which differs from method to method;
``extras["beta"]`` holds it. ``normalize=False`` is Captum's default.

Perturbation ``j`` is the same for every image, drawn from ``seed`` alone
(:class:`cnnlens.seeding.Draws`), so an image's score does not depend on the other
images of the call; the perturbed inputs are built on the device inside each chunk
of :func:`cnnlens.chunking.run_chunked` (one forward per perturbation).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..accel import forward_runner
from ..attribution.base import resolve_target
from ..chunking import chunk_size, run_chunked
from ..errors import InputError
from ..gradmode import with_autograd
from ..hooks import frozen
from ..params import Param
from ..placement import model_device
from ..seeding import Draws
from ..types import Explanation
from ._common import as_maps, check_inputs, check_model, class_score
from .registry import Metric, Scoring, register
from .result import Result

PARAMS = {
    "samples": Param("int", 50, min=1),
    "noise": Param("float", 0.1, min=0, open_min=True),
    "normalize": Param("bool", True),
    "score": Param("str", "logit", choices=("logit", "probability")),
    "seed": Param("int", 0),
}


@with_autograd
def infidelity(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    samples: int = 50,
    noise: float = 0.1,
    normalize: bool = True,
    score: str = "logit",
    seed: int = 0,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
) -> Result:
    """Mean squared error between ``I . map`` and ``f(x) - f(x - I)``, ``I ~ N(0, noise^2)``.

    ``noise`` is the standard deviation in normalised input units;
    ``normalize`` rescales the map by its optimal ``beta`` first (module
    docstring); ``score`` ``"logit"`` (Captum) or ``"probability"``.
    ``extras``: ``beta`` ``[N]`` (1 without ``normalize``) and ``target``.
    """
    model = check_model(model)
    inputs = check_inputs(inputs, model).to(model_device(model))
    if isinstance(maps, Explanation) and target is None:
        target = maps.target
    maps = as_maps(maps, like=inputs)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise InputError(f"samples must be a positive integer, got {samples!r}")
    if (
        not isinstance(noise, int | float)
        or isinstance(noise, bool)
        or not math.isfinite(noise)
        or noise <= 0
    ):
        raise InputError(f"noise must be a standard deviation > 0, got {noise!r}")
    if score not in ("logit", "probability"):
        raise InputError(f"score must be 'logit' or 'probability', got {score!r}")
    n = inputs.shape[0]
    device = inputs.device
    draws = Draws(int(seed), samples, inputs.shape[1:], device=device, dtype=inputs.dtype)
    with frozen(model):
        target, logits = resolve_target(model, inputs, target)
        f_x = class_score(logits, target, score)
        maps = maps.to(inputs.dtype)
        size = chunk_size(model, inputs, backward=False, batch_size=batch_size, memory=memory)
        run_model = forward_runner(model, inputs)

        def run(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
            j = torch.arange(a, b, device=device)
            img = j // samples
            pert = noise * draws(j % samples)
            f_pert = class_score(run_model(inputs[img] - pert), target[img], score)
            dot = (pert * maps[img]).flatten(1).sum(1)
            return dot.double(), (f_x[img] - f_pert).double()

        dot, delta = run_chunked(run, n * samples, size, desc=desc)
    dot, delta = dot.view(n, samples), delta.view(n, samples)
    if normalize:
        aa, ab, bb = (dot * dot).sum(1), (dot * delta).sum(1), (delta * delta).sum(1)
        beta = ab / torch.where(aa == 0, torch.ones_like(aa), aa)  # Captum's safe_div
        values = ((beta * beta * aa - 2 * beta * ab + bb) / samples).clamp_min(0)
    else:
        beta = torch.ones(n, dtype=torch.float64, device=device)
        values = (dot - delta).square().mean(1)
    return Result(
        metric="infidelity",
        values=values.float(),
        params={
            "samples": samples,
            "noise": float(noise),
            "normalize": bool(normalize),
            "score": score,
            "seed": seed,
        },
        extras={"beta": beta.float(), "target": target},
        higher_is_better=False,
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    settings.setdefault("seed", s.seed)
    r = infidelity(
        s.model, s.x, s.maps, s.target, batch_size=s.batch_size, memory=s.memory, **settings
    )
    return {"values": r.values}


register(
    Metric(
        "infidelity",
        "beta-scaled MSE of I . map vs f(x) - f(x - I), Gaussian I (lower is better)",
        _score, lower_is_better=True, params=PARAMS, default=False, order=120,
        family="faithfulness",
    )
)  # fmt: skip

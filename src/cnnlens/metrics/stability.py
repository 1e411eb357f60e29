"""Relative input and output stability (Agarwal et al., "Rethinking stability for
attribution-based explanations", 2022, eqs. 2 and 4).

For perturbations ``x'`` of ``x`` that keep the predicted class:

- RIS ``= max_{x'} ||(e_x - e_x') / e_x||_2 / max(||(x - x') / x||_2, eps_min)``,
- ROS ``= max_{x'} ||(e_x - e_x') / e_x||_2 / max(||h(x) - h(x')||_2, eps_min)``,

with element-wise divisions (a zero element of ``e_x`` or ``x`` divides by ``eps_min``
instead, as Quantus 0.6 does), ``h`` the logits and ``x' = x + std · z_s`` from
``samples`` seeded Gaussian draws (draw ``s`` is the same for every image). Copies whose
predicted class differs from ``x``'s are left out of the maximum; an image all of whose
copies change class scores NaN. Lower is better.
"""

from __future__ import annotations

import torch
from torch import nn

from ..gradmode import with_autograd
from ..params import Param
from ..seeding import Draws
from ._robustness import Perturbed, explain_perturbed, positive_number
from .registry import Metric, Scoring, register
from .result import Result

PARAMS = {
    "std": Param("float", 0.1, min=0, open_min=True, help="Gaussian noise, input units"),
    "samples": Param("int", 10, min=1),
    "seed": Param("int", 0),
    "eps_min": Param("float", 1e-6, min=0, open_min=True),
}


def _safe(a: torch.Tensor, eps: float) -> torch.Tensor:
    return a + (a == 0) * eps


def _stability(kind, model, inputs, maps, target, method, method_params, *, std, samples,
               seed, eps_min, batch_size, memory, desc) -> Result:  # fmt: skip
    positive_number("std", std)
    positive_number("eps_min", eps_min)
    name = f"relative_{kind}_stability"
    state = {}

    def perturb(x: torch.Tensor, img: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if "draws" not in state:
            state["draws"] = Draws(int(seed), samples, x.shape[1:], device=x.device,
                                   dtype=x.dtype, kind="normal")  # fmt: skip
        return x[img] + std * state["draws"](s)

    def score(p: Perturbed) -> torch.Tensor:
        e = p.base[p.img]
        num = ((e - p.maps) / _safe(e, eps_min)).flatten(1).norm(dim=1)
        if kind == "input":
            x = p.inputs[p.img]
            den = ((x - p.x) / _safe(x, eps_min)).flatten(1).norm(dim=1)
        else:
            den = (p.logits0[p.img] - p.logits).norm(dim=1)
        ratio = num / _safe(den, eps_min)
        kept = p.logits.argmax(1) == p.logits0[p.img].argmax(1)
        return torch.where(kept, ratio, float("nan"))

    ratios, target, label = explain_perturbed(
        model, inputs, maps, target, method, method_params, name=name, samples=samples,
        perturb=perturb, score=score, logits=True, batch_size=batch_size, memory=memory,
        desc=desc,
    )  # fmt: skip
    values = torch.where(ratios.isnan().all(1), float("nan"), ratios.nan_to_num(-1.0).amax(1))
    return Result(
        name, values,
        params={"method": label, "std": float(std), "samples": samples, "seed": seed,
                "eps_min": float(eps_min)},
        extras={"samples": ratios, "target": target}, higher_is_better=False,
    )  # fmt: skip


@with_autograd
def relative_input_stability(
    model: nn.Module,
    inputs: torch.Tensor,
    maps=None,
    target: int | torch.Tensor | None = None,
    *,
    method=None,
    std: float = 0.1,
    samples: int = 10,
    seed: int = 0,
    eps_min: float = 1e-6,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
    **method_params,
) -> Result:
    """RIS per image (Agarwal et al. 2022, eq. 2); arguments as :func:`max_sensitivity`'s.
    ``extras["samples"]`` holds every ratio ``[N,S]`` (NaN: the class changed)."""
    return _stability(
        "input", model, inputs, maps, target, method, method_params, std=std, samples=samples,
        seed=seed, eps_min=eps_min, batch_size=batch_size, memory=memory, desc=desc,
    )  # fmt: skip


@with_autograd
def relative_output_stability(
    model: nn.Module,
    inputs: torch.Tensor,
    maps=None,
    target: int | torch.Tensor | None = None,
    *,
    method=None,
    std: float = 0.1,
    samples: int = 10,
    seed: int = 0,
    eps_min: float = 1e-6,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
    **method_params,
) -> Result:
    """ROS per image (Agarwal et al. 2022, eq. 4); arguments as :func:`max_sensitivity`'s.
    ``extras["samples"]`` holds every ratio ``[N,S]`` (NaN: the class changed)."""
    return _stability(
        "output", model, inputs, maps, target, method, method_params, std=std, samples=samples,
        seed=seed, eps_min=eps_min, batch_size=batch_size, memory=memory, desc=desc,
    )  # fmt: skip


def _score(f):
    def score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
        settings.setdefault("seed", s.seed)
        r = f(s.model, s.x, s.maps, s.target, method=s.fn, batch_size=s.batch_size,
              memory=s.memory, **settings)  # fmt: skip
        return {"values": r.values}

    return score


for _name, _f, _text, _order in (
    ("relative-input-stability", relative_input_stability,
     "max relative map change / relative input change (Agarwal et al. 2022; lower is better)",
     313),
    ("relative-output-stability", relative_output_stability,
     "max relative map change / logit change (Agarwal et al. 2022; lower is better)", 314),
):  # fmt: skip
    register(
        Metric(
            _name, _text, _score(_f), lower_is_better=True, needs=("model", "method"),
            params=PARAMS, default=False, family="robustness", order=_order,
        )
    )  # fmt: skip

"""Lipschitz quotients of an explanation: local Lipschitz estimate and continuity.

- Local Lipschitz estimate (Alvarez-Melis and Jaakkola, "On the robustness of
  interpretability methods", 2018, eq. 1): ``max_{x'} ||e(x) - e(x')||_2 / ||x - x'||_2``
  over ``x'`` near ``x``, estimated (as Quantus 0.6 does) from ``samples`` Gaussian
  perturbations ``x' = x + std · z``; noise draw ``s`` is the same seeded ``z_s``
  for every image.
- Continuity (Montavon, Samek and Müller, "Methods for interpreting and understanding
  deep neural networks", Digital Signal Processing 2018, Sec. 7.1, "explanation
  continuity"): ``max_{x'} ||e(x) - e(x')||_1 / ||x - x'||_2`` over horizontal
  translations of the image (the paper's example), the uncovered columns filled with
  the image's minimum (Quantus' "black"). Default shifts: ±1 ... ±max(1, W/8) pixels.

Both re-explain every perturbed copy for the image's target (lower is better: a
continuous explanation moves little when the input moves little); maps are used as
given (no absolute value, no normalisation). Copies that change the predicted class are
kept, as in both papers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from ..gradmode import with_autograd
from ..params import Param
from ..seeding import Draws
from ._robustness import Perturbed, explain_perturbed, positive_number
from .registry import Metric, Scoring, register
from .result import Result

LIPSCHITZ_PARAMS = {
    "std": Param("float", 0.1, min=0, open_min=True, help="Gaussian noise, input units"),
    "samples": Param("int", 10, min=1),
    "seed": Param("int", 0),
}
CONTINUITY_PARAMS = {"shifts": Param("any", None, none=True, help="horizontal shifts, pixels")}


@with_autograd
def local_lipschitz_estimate(
    model: nn.Module,
    inputs: torch.Tensor,
    maps=None,
    target: int | torch.Tensor | None = None,
    *,
    method=None,
    std: float = 0.1,
    samples: int = 10,
    seed: int = 0,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
    **method_params,
) -> Result:
    """Per image ``max_s ||e(x + std z_s) - e(x)||_2 / ||std z_s||_2``.

    ``method``, ``maps`` and ``target`` as in :func:`cnnlens.metrics.max_sensitivity`.
    ``extras["samples"]`` holds every quotient ``[N,S]``.
    """
    positive_number("std", std)
    state = {}

    def perturb(x: torch.Tensor, img: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if "draws" not in state:
            state["draws"] = Draws(int(seed), samples, x.shape[1:], device=x.device,
                                   dtype=x.dtype, kind="normal")  # fmt: skip
        return x[img] + std * state["draws"](s)

    def score(p: Perturbed) -> torch.Tensor:
        num = (p.maps - p.base[p.img]).flatten(1).norm(dim=1)
        return num / (p.x - p.inputs[p.img]).flatten(1).norm(dim=1)

    quotients, target, label = explain_perturbed(
        model, inputs, maps, target, method, method_params, name="local_lipschitz_estimate",
        samples=samples, perturb=perturb, score=score, batch_size=batch_size, memory=memory,
        desc=desc,
    )  # fmt: skip
    return Result(
        "local_lipschitz_estimate", quotients.amax(1),
        params={"method": label, "std": float(std), "samples": samples, "seed": seed},
        extras={"samples": quotients, "target": target}, higher_is_better=False,
    )  # fmt: skip


def default_shifts(width: int) -> list[int]:
    """±1 ... ±max(1, width // 8) pixels."""
    top = max(1, width // 8)
    return [s for k in range(1, top + 1) for s in (-k, k)]


def translate(x: torch.Tensor, shift: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Images ``x`` ``[B,C,H,W]`` moved right by ``shift`` ``[B]`` pixels (left when
    negative), the uncovered columns set to ``fill`` ``[B]``."""
    w = x.shape[-1]
    cols = torch.arange(w, device=x.device)[None, :] - shift[:, None]  # source column
    inside = (cols >= 0) & (cols < w)
    idx = cols.clamp(0, w - 1)[:, None, None, :].expand_as(x)
    moved = x.gather(3, idx)
    return torch.where(inside[:, None, None, :], moved, fill.view(-1, 1, 1, 1))


@with_autograd
def continuity(
    model: nn.Module,
    inputs: torch.Tensor,
    maps=None,
    target: int | torch.Tensor | None = None,
    *,
    method=None,
    shifts: Sequence[int] | None = None,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    desc: str | None = None,
    **method_params,
) -> Result:
    """Per image ``max_t ||e(x) - e(T_t x)||_1 / ||x - T_t x||_2`` over horizontal shifts ``t``.

    ``shifts``: pixels (non-zero, ``|t| <= W``); default :func:`default_shifts`.
    ``extras["samples"]`` holds every quotient ``[N, len(shifts)]`` (NaN where the
    shift leaves the image unchanged, e.g. a constant image).
    """
    width = int(inputs.shape[-1]) if isinstance(inputs, torch.Tensor) else 0
    shifts = default_shifts(width) if shifts is None else shifts
    try:
        values = [int(t) for t in shifts if float(t) == int(t) and not isinstance(t, bool)]
        ok = len(values) == len(shifts) > 0
    except (TypeError, ValueError):
        ok, values = False, []
    if not ok or any(t == 0 or abs(t) > width for t in values):
        raise InputError(
            f"shifts must be a non-empty list of non-zero integer pixel shifts with |shift| <= "
            f"{width} (the image width), got {shifts!r}"
        )
    table = torch.tensor(values)

    def perturb(x: torch.Tensor, img: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        fill = x.flatten(1).amin(1)
        return translate(x[img], table.to(x.device)[s], fill[img])

    def score(p: Perturbed) -> torch.Tensor:
        num = (p.maps - p.base[p.img]).flatten(1).abs().sum(1)
        den = (p.x - p.inputs[p.img]).flatten(1).norm(dim=1)
        return torch.where(den > 0, num / den.clamp_min(1e-30), float("nan"))

    quotients, target, label = explain_perturbed(
        model, inputs, maps, target, method, method_params, name="continuity",
        samples=len(table), perturb=perturb, score=score, batch_size=batch_size,
        memory=memory, desc=desc,
    )  # fmt: skip
    values = torch.where(quotients.isnan().all(1), float("nan"), quotients.nan_to_num(-1.0).amax(1))
    return Result(
        "continuity", values, params={"method": label, "shifts": table.tolist()},
        extras={"samples": quotients, "target": target}, higher_is_better=False,
    )  # fmt: skip


def _score(f):
    def score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
        if f is local_lipschitz_estimate:
            settings.setdefault("seed", s.seed)
        r = f(s.model, s.x, s.maps, s.target, method=s.fn, batch_size=s.batch_size,
              memory=s.memory, **settings)  # fmt: skip
        return {"values": r.values}

    return score


register(
    Metric(
        "local-lipschitz-estimate",
        "max ||map change||_2 / ||input change||_2 under Gaussian noise (Alvarez-Melis & "
        "Jaakkola 2018; lower is better)",
        _score(local_lipschitz_estimate), lower_is_better=True, needs=("model", "method"),
        params=LIPSCHITZ_PARAMS, default=False, family="robustness", order=311,
    )
)  # fmt: skip
register(
    Metric(
        "continuity",
        "max ||map change||_1 / ||input change||_2 under horizontal shifts (Montavon et al. "
        "2018; lower is better)",
        _score(continuity), lower_is_better=True, needs=("model", "method"),
        params=CONTINUITY_PARAMS, default=False, family="robustness", order=312,
    )
)  # fmt: skip

"""Input invariance (Kindermans, Hooker, Adebayo, Alber, Schütt, Dähne, Erhan and Kim,
"The (Un)reliability of Saliency Methods", 2017/2019, Sec. 2).

A constant shift ``m`` of the input that the network absorbs in its first layer cannot
change what the network computes, so it should not change the explanation: the second
network takes ``x + m`` and its first layer subtracts ``W m`` (``b_2 = b_1 - W m``), so
from the first layer's output on the two networks are the same function. The map of
``x + m`` through the shifted network is compared with the map of ``x``: ``values`` is 1
where they agree within ``atol`` of the map's largest ``|a|`` at every pixel, else 0
(higher is better); ``extras["difference"]`` the largest difference in those units.

Generic: the first layer is the first ``Conv2d`` or ``Linear`` a forward reaches, and it
must take the image as it is (reshaped at most); other models are refused. ``W m`` is
computed by that layer on a constant image, so with zero padding it is a bias that
varies near the borders (Kindermans' per-channel bias only holds where the padding is
not reached; Quantus subtracts one value per channel). The shifted network is a deep
copy; the model is never touched. One extra explanation per image.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..attribution.base import resolve_target
from ..errors import InputError
from ..gradmode import with_autograd
from ..hooks import HookSet, frozen
from ..params import Param, check_params
from ..placement import model_device
from ._axioms import explainer
from ._common import as_maps, check_inputs, check_model
from .registry import Metric, Scoring, register
from .result import Result

PARAMS = {
    "shift": Param("float", -1.0, help="constant added to every input value"),
    "atol": Param("float", 1e-4, min=0, help="agreement, in units of the map's largest |a|"),
}


def first_layer(model: nn.Module, x: torch.Tensor) -> tuple[str, tuple[int, ...]]:
    """Name of the first ``Conv2d``/``Linear`` a forward of ``x[:1]`` reaches and the shape
    of its input; refused unless that input is the image itself (reshaped at most)."""
    calls: list[tuple[str, torch.Tensor]] = []
    with HookSet() as hooks:
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                hooks.forward_pre(module, lambda _m, inp, name=name: calls.append((name, inp[0])))
        with torch.no_grad():
            model(x[:1])
    if not calls:
        raise InputError("input-invariance needs a model whose first layer is a Conv2d or Linear")
    name, inp = calls[0]
    if sum(c[0] == name for c in calls) > 1:
        raise InputError(f"input-invariance: the first layer {name!r} runs more than once")
    if inp.numel() != x[:1].numel() or not torch.equal(inp.reshape(x[:1].shape), x[:1]):
        raise InputError(
            f"input-invariance needs the first layer ({name!r}) to take the image as it is; "
            "this model transforms it before (e.g. normalises it inside forward)"
        )
    return name, tuple(inp.shape[1:])


def shifted_model(model: nn.Module, x: torch.Tensor, shift: float) -> nn.Module:
    """A deep copy of ``model`` that computes on ``x + shift`` what ``model`` does on ``x``:
    its first layer subtracts its own response to the constant image ``shift`` (less its
    bias), i.e. its bias becomes ``b - W m``."""
    name, shape = first_layer(model, x)
    work = copy.deepcopy(model).eval()
    layer = work.get_submodule(name)
    with torch.no_grad():
        const = torch.full((1, *shape), float(shift), device=x.device, dtype=x.dtype)
        offset = layer(const) - layer(torch.zeros_like(const))
    work._input_shift_hook = layer.register_forward_hook(lambda _m, _i, out: out - offset)
    return work


@with_autograd
def input_invariance(
    model: nn.Module,
    inputs: torch.Tensor,
    maps,
    target: int | torch.Tensor | None = None,
    *,
    method=None,
    method_params: dict | None = None,
    shift: float = -1.0,
    atol: float = 1e-4,
) -> Result:
    """1 where the map of ``inputs + shift`` through the shifted network equals ``maps``.

    ``method``: a registered name or ``f(model, x, target) -> maps``; with an
    :class:`~cnnlens.types.Explanation` its method, settings and targets by default.
    ``extras``: ``difference`` ``[N]`` (largest ``|a - a'|`` over the largest ``|a|``),
    ``shifted`` (the maps of the shifted input), ``target``."""
    settings = dict(shift=shift, atol=atol)
    check_params("input_invariance", settings, PARAMS)
    model = check_model(model)
    inputs = check_inputs(inputs, model).to(model_device(model))
    again, described = explainer("input-invariance", maps, method, method_params)
    if target is None and hasattr(maps, "target"):
        target = maps.target
    original = as_maps(maps, like=inputs)
    with frozen(model):
        target, _ = resolve_target(model, inputs, target)
        work = shifted_model(model, inputs, shift)
    new = again(work, inputs + shift, target)
    top = original.flatten(1).abs().amax(1)
    diff = (new - original).flatten(1).abs().amax(1) / torch.where(top > 0, top, 1.0)
    return Result(
        metric="input-invariance",
        values=(diff <= atol).float(),
        params={**settings, **described},
        extras={"difference": diff, "shifted": new, "target": target},
    )


def _score(s: Scoring, **settings) -> dict[str, torch.Tensor]:
    r = input_invariance(s.model, s.x, s.maps, s.target, method=s.fn, **settings)
    return {"values": r.values}


register(
    Metric(
        "input-invariance",
        "1 when a constant input shift absorbed by the first layer leaves the map unchanged "
        "(Kindermans et al. 2017)",
        _score, needs=("model", "method"), params=PARAMS, default=False,
        family="axiomatic", order=214,
    )
)  # fmt: skip

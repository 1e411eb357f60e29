"""SmoothGrad, SmoothGrad^2 and VarGrad around any registered method.

Smilkov et al. 2017, eq. (3): ``M_hat(x) = 1/n sum_i M(x + N(0, sigma^2))``
with ``sigma = noise * (max(x) - min(x))`` per image (the paper's "noise
level"); ``kind="smoothgrad_sq"`` averages squares (Hooker et al. 2019) and
``kind="vargrad"`` takes the variance (Adebayo et al. 2018), as Captum's
NoiseTunnel. Averaging is over ``raw`` (per-channel attributions) when the
base method has it, then reduced to maps as the base method does; over the
maps otherwise (CAMs). Noisy copies (images x samples) run through the base
method in chunks sized by the batching helper. Noise sample ``j`` is the same
standard normal tensor for every image (drawn from the seed alone,
:class:`cnnlens.seeding.Draws`), scaled by each image's ``sigma``, so an image's
map does not depend on the other images of the call.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..chunking import run_chunked
from ..errors import InputError
from ..params import Param, check_names
from ..seeding import Draws
from ..types import Explanation
from . import get, register
from .base import BATCH_SIZE, MEMORY, SEED
from .common import Configured, to_input_size

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


@register
class SmoothGrad(Configured):
    """Noise tunnel: ``base`` names the wrapped method; other keywords go to it."""

    name = "smoothgrad"
    description = "SmoothGrad / SmoothGrad^2 / VarGrad: average of a method over noisy copies"
    hyperparameters: ClassVar[dict[str, Param]] = {
        "base": Param("str", "saliency", help="the wrapped method's name"),
        "samples": Param("int", 50, min=1),
        "noise": Param("float", 0.15, min=0, help="noise sigma as a fraction of the range"),
        "kind": Param("str", "smoothgrad", choices=KINDS),
        "seed": SEED,
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }
    family = "Gradient"

    @classmethod
    def passes(cls, params):
        base = get(params["base"])
        inner = base.cost({k: v for k, v in params.items() if k in base.hyperparameters})
        return None if inner is None else params["samples"] * inner + 1.0

    @classmethod
    def accepted(cls, params: dict[str, Any] | None = None) -> frozenset[str]:
        base = (params or {}).get("base", cls.defaults["base"])
        inner = get(base).accepted(params) if isinstance(base, str) and base != cls.name else None
        return frozenset(cls.defaults) | (inner or frozenset())

    @classmethod
    def check_params(cls, params: Any, model: nn.Module | None = None) -> dict[str, Any]:
        """Its own declared parameters, then the rest against the wrapped method's."""
        if not isinstance(params, dict):
            return super().check_params(params, model)
        own = {k: v for k, v in params.items() if k in cls.hyperparameters}
        super().check_params(own, model)
        base = own.get("base", cls.defaults["base"])
        if base == cls.name:
            raise InputError("smoothgrad cannot wrap itself")
        inner = get(base)
        rest = {k: v for k, v in params.items() if k not in cls.hyperparameters}
        valid = cls.accepted(params)
        check_names(cls.name, params, valid, "hyperparameter")
        inner.check_params(rest, model)
        return dict(params)

    def __init__(self, model: nn.Module, **hyperparameters: Any) -> None:
        own = {k: v for k, v in hyperparameters.items() if k in self.defaults}
        super().__init__(model, **own)
        self.params = dict(hyperparameters)
        base = self.hp["base"]
        if base == self.name:
            raise InputError("smoothgrad cannot wrap itself")
        cls = get(base)
        inner = {k: v for k, v in hyperparameters.items() if k not in self.defaults}
        for shared in ("batch_size", "memory"):  # chunk settings reach the wrapped method too
            if shared in hyperparameters and shared in getattr(cls, "defaults", {}):
                inner[shared] = hyperparameters[shared]
        self.base = cls(model, **inner)
        if self.hp["kind"] not in KINDS:
            raise InputError(f"kind must be one of {', '.join(KINDS)}, got {self.hp['kind']!r}")
        samples = self.hp["samples"]
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise InputError(f"samples must be a positive integer, got {samples!r}")
        noise = self.hp["noise"]
        if not isinstance(noise, (int, float)) or noise < 0:
            raise InputError(f"noise must be a number >= 0 (fraction of the range), got {noise!r}")

    def attribute(self, inputs, target, logits) -> Explanation:
        samples, kind = self.hp["samples"], self.hp["kind"]
        n = len(inputs)
        flat = inputs.flatten(1)
        sigma = (self.hp["noise"] * (flat.amax(1) - flat.amin(1))).view(-1, 1, 1, 1)
        draws = Draws(
            int(self.hp["seed"]),
            samples,
            inputs.shape[1:],
            device=inputs.device,
            dtype=inputs.dtype,
        )
        uses_logits = getattr(type(self.base), "uses_logits", True)
        sums: dict[str, torch.Tensor] = {}
        state: dict[str, bool] = {}

        def run(lo: int, hi: int) -> torch.Tensor:
            idx = torch.arange(lo, hi, device=inputs.device)
            img = idx // samples
            noisy = inputs[img] + sigma[img] * draws(idx % samples)
            noisy_logits = None
            if uses_logits:
                with torch.no_grad():
                    noisy_logits = self.base.model(noisy)
            result = self.base.attribute(noisy, target[img], noisy_logits)
            state.setdefault("raw", result.raw is not None)
            value = result.raw if state["raw"] else result.maps
            for key, part in (("s1", value), ("s2", value * value)):
                if key not in sums:
                    sums[key] = torch.zeros((n, *value.shape[1:]), device=value.device)
                sums[key].index_add_(0, img, part.float())
            return idx

        run_chunked(run, n * samples, self.chunk(inputs))
        mean = sums["s1"] / samples
        if kind == "smoothgrad":
            value = mean
        elif kind == "smoothgrad_sq":
            value = sums["s2"] / samples
        else:
            value = (sums["s2"] / samples - mean * mean).clamp_min(0)
        if state["raw"]:
            reduce = getattr(self.base, "reduce", None)
            maps = reduce(value) if reduce is not None else value.sum(1, keepdim=True)
            maps = to_input_size(maps, tuple(inputs.shape[-2:]))
            return self.explanation(maps, target, raw=value)
        return self.explanation(value, target)

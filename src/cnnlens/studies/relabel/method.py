"""Re-label distillation (paper 004): the weights of a linear student that imitates the
network on VAE samples around the image, as an attribution method registered from the
paper's package (the method registry imports it: ``attribution.PROVIDERS``).

``cnnlens.explain(model, x, method="relabel", vae=vae)``; the pipeline lives in
:mod:`cnnlens.studies.relabel` (VAE samples, Eq. 6 labels with the scale search, the
Eq. 7 student). Maps are ``|sum_c (w_1 - w_0)|`` per pixel (``signed=True``: the
signed sum); ``raw`` keeps the signed per-channel ``w_1 - w_0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...attribution import register
from ...attribution.base import BATCH_SIZE, MEMORY, SEED, Method
from ...errors import InputError
from ...params import Param
from ...types import Explanation
from .distiller import Settings, distill
from .student import LOSSES
from .synthesis import ANCHORS


@register
class Relabel(Method):
    """Re-label distillation with a VAE trained on the model's data.

    Hyperparameters: ``vae`` (a ConvVAE, any module with ``encode``/``decode``,
    or a folder saved by ``cnnlens.studies.relabel.train_vae``; required), ``n`` (1000
    synthetic images per input), ``anchor`` (``"reconstruction"``: samples are the
    decoded latents, the paper's; ``"input"``: the decoded change added to the input,
    see :mod:`cnnlens.studies.relabel.synthesis`), ``scale`` (1.0, the start of the scale search),
    ``band`` ((0.1, 0.9), the share of ``y' = 1`` to reach), ``max_tries`` (8),
    ``probe`` (100 samples per scale tried), ``loss`` (``"relabel"`` = Eq. 7, or
    ``"ce"`` = Eq. 2), ``lambda1`` (0.7), ``lambda2`` (0.3), ``weight_decay``
    (1e-3), ``steps`` (100 gradient steps), ``lr`` (1.0, relative to the
    curvature bound), ``downsample`` (2: the student sees images average-pooled
    by 2, 16x16 for 32x32 inputs, the paper's "low-dimensional space", with 4x
    fewer weights; 1: full size), ``signed`` (False), ``seed``, ``batch_size``.
    ``extras``: ``share``, ``scale``, ``tries``, ``fidelity``, ``bias`` per image.
    The target class ``c`` defaults to the top-1 (the paper's choice); a given
    class relabels ``y' = [top-1(x') = c]``.
    """

    name = "relabel"
    description = "re-label distillation: linear student on VAE samples relabelled by the model"
    family = "Surrogate"
    needs = "a VAE trained on the data (cnnlens train-vae)"

    @classmethod
    def passes(cls, params):
        return float(params["n"])  # the synthetic images' forwards (the student is small)

    @classmethod
    def prepare(cls, setup, params):
        """The VAE: a given folder is checked; else the ``vae-<data>`` folder saved next
        to the model by ``cnnlens train-vae`` (:func:`~.vae_training.locate_vae`)."""
        from .vae_training import locate_vae

        given = params.get("vae")
        if given is not None and not isinstance(given, str | Path):
            return {}  # a VAE module
        if given is None and (setup.model_path is None or setup.data is None):
            raise InputError(
                "relabel needs vae=<saved VAE folder> (a VAE trained on the data: "
                "cnnlens train-vae)"
            )
        model = setup.model_path if setup.model_path is not None else Path(".")
        return {"vae": str(locate_vae(model, setup.data or "the data", given))}

    hyperparameters = {
        "vae": Param("any", None, none=True, help="a VAE or a saved VAE folder; required"),
        "n": Param("int", 1000, min=1),
        "anchor": Param("str", "reconstruction", choices=ANCHORS),
        "scale": Param("float", 1.0, min=0, open_min=True),
        "band": Param(
            "any",
            (0.1, 0.9),
            help="(low, high) with 0 <= low < high <= 1",
            validate=lambda v: Settings(band=v),
        ),
        "max_tries": Param("int", 8, min=1),
        "probe": Param("int", 100, min=1),
        "loss": Param("str", "relabel", choices=LOSSES),
        "lambda1": Param("float", 0.7, min=0),
        "lambda2": Param("float", 0.3, min=0),
        "weight_decay": Param("float", 1e-3, min=0),
        "steps": Param("int", 100, min=1),
        "lr": Param("float", 1.0, min=0, open_min=True),
        "downsample": Param("int", 2, min=1),
        "signed": Param("bool", False),
        "seed": SEED,
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }

    @classmethod
    def check_params(cls, params: Any, model: nn.Module | None = None) -> dict[str, Any]:
        """The declared checks, then the distiller's own (band, the lambdas together)."""
        params = super().check_params(params, model)
        Settings(**{k: v for k, v in params.items() if k not in ("vae", "signed")})
        return params

    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor, logits: torch.Tensor
    ) -> Explanation:
        p = dict(self.params)
        vae = p.pop("vae", None)
        signed = bool(p.pop("signed", False))
        result = distill(self.model, vae, inputs, target, Settings(**p))
        summed = result.raw.sum(1, keepdim=True)
        maps = summed if signed else summed.abs()
        return self.explanation(
            maps,
            target,
            raw=result.raw,
            share=result.share,
            scale=result.scale,
            tries=result.tries,
            fidelity=result.fidelity,
            bias=result.bias,
        )

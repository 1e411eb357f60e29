"""FGVis (Wagner, Kohler, Gindele, Hetzel, Wiedemer & Behnke 2019, "Interpretable and
Fine-Grained Visual Explanations for Convolutional Neural Networks", CVPR); a Table 1
baseline of the re-label distillation paper (004).

A pixel-wise mask ``m`` in ``[0, 1]^{H x W}`` (one value per pixel, shared by the colour
channels; no smoothing, no low-resolution grid: "fine-grained") is optimised per image:

* preservation game: the explanation ``e = m * x + (1 - m) * r`` keeps the class:
  ``min_m  l1 * mean(m) - p_c(e)``, from ``m = 1``;
* deletion game: ``e = (1 - m) * x + m * r`` loses it:
  ``min_m  l1 * mean(m) + p_c(e)``, from ``m = 0``;

with ``p_c`` the softmax score of the target, ``r`` the reference image (``fill``: 0, the
data set's mean image for normalised inputs: the paper's zero image "image x mask"), Adam
(``lr``) and ``m`` clipped to ``[0, 1]`` after each step.

The defence against adversarial evidence (the paper's section 3.2): an explanation may only
remove evidence the image holds, so at every ReLU the activation of the perturbed image is
bounded by that of the image, ``0 <= h_l(e) <= h_l(x)``. It is placed as forward hooks
(:mod:`cnnlens.hooks`) on every ``nn.ReLU`` / ``nn.ReLU6`` module that replace each output
by ``where(h_l(e) > h_l(x), h_l(x), h_l(e))``: the gradient reaching a neuron that exceeds
its original activation is filtered to zero (the paper's gradient filter, which needs no
tuned parameter), and the forward score cannot count such excess evidence either.

Departures, said plainly: the paper's text is not in ``shared/papers``, so the games and
the defence follow the published description as summarised above. The paper adapts the
sparsity weight ``lambda`` per image so that the explanation keeps a softmax score
comparable to the image's; here ``l1`` is one fixed weight (a hyperparameter), and the
defence clamps the forward value as well as filtering the gradient. A model whose
activations are not all ReLU modules (a functional ``F.relu``, a GELU / SiLU / sigmoid)
is refused with the module at fault: the bound would not reach every nonlinearity.

Maps: the mask (preservation: the pixels kept; deletion: the pixels whose removal deletes
the class), ``[N, 1, H, W]`` in ``[0, 1]``. Images are optimised together (one loss summed
over images; Adam acts per element, so each image's mask follows the path it would follow
alone), in chunks from :mod:`cnnlens.chunking`. Nothing is drawn at random: the same call
gives the same map, so the method takes no seed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..chunking import run_chunked
from ..errors import LayerError
from ..hooks import HookSet
from ..nets.checks import ACTIVATIONS, activation_report
from ..params import Param
from ..types import Explanation
from . import register
from ._perturb import baseline_like
from .base import BATCH_SIZE, FILL, MEMORY
from .common import Configured

BOUNDED = (nn.ReLU, nn.ReLU6)
"""Activation modules the defence bounds (non-negative, monotone)."""


class EvidenceBound:
    """Forward hooks' state: the ReLU outputs of the original images, in call order, and
    the bounded forward of perturbed ones (:func:`evidence_bound`)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.kept: list[torch.Tensor] = []
        self.recording = True
        self.calls = 0

    def hook(self, _module: nn.Module, _inputs, out: torch.Tensor):
        if self.recording:
            self.kept.append(out.detach().clone())
            return None
        if self.calls >= len(self.kept) or self.kept[self.calls].shape != out.shape:
            raise LayerError(
                "fgvis: the model's ReLUs ran differently on the perturbed images than on "
                "the originals (data-dependent control flow); the evidence bound cannot be placed"
            )
        ref = self.kept[self.calls]
        self.calls += 1
        return torch.where(out > ref, ref, out)

    def __call__(self, perturbed: torch.Tensor) -> torch.Tensor:
        """Logits of ``perturbed`` (same shape as the recorded images), every ReLU output
        bounded by the original's."""
        self.calls = 0
        logits = self.model(perturbed)
        if self.calls != len(self.kept):
            raise LayerError(
                f"fgvis: {self.calls} ReLU calls on the perturbed images, {len(self.kept)} on "
                "the originals; the evidence bound cannot be placed"
            )
        return logits


@contextlib.contextmanager
def evidence_bound(model: nn.Module, original: torch.Tensor) -> Iterator[EvidenceBound]:
    """Inside the block, ``bound(e)`` runs ``model`` on perturbed images ``e`` (one per
    image of ``original``) with each ReLU output ``h_l(e)`` replaced by
    ``min(h_l(e), h_l(original))`` (Wagner et al. 2019, section 3.2). The hooks are removed
    on exit, also on an error."""
    bound = EvidenceBound(model)
    with HookSet() as hooks:
        for module in model.modules():
            if isinstance(module, BOUNDED):
                hooks.forward(module, bound.hook)
        with torch.no_grad():
            model(original)
        bound.recording = False
        yield bound


def require_relu_model(model: nn.Module, x: torch.Tensor) -> None:
    """A :class:`LayerError` when the bound cannot reach every nonlinearity of ``model``."""
    functional = [f for f in activation_report(model, x[:1]) if f.kind == "functional"]
    if functional:
        raise LayerError(
            f"fgvis bounds the activations of ReLU modules, but {functional[0].message}; "
            "the defence against adversarial evidence cannot be placed there"
        )
    others = [
        (name, type(m).__name__)
        for name, m in model.named_modules()
        if isinstance(m, ACTIVATIONS) and not isinstance(m, BOUNDED)
    ]
    if others:
        name, kind = others[0]
        raise LayerError(
            f"fgvis bounds ReLU activations only (Wagner et al. 2019), but module {name!r} is "
            f"a {kind}; the defence against adversarial evidence cannot be placed on it"
        )
    if not any(isinstance(m, BOUNDED) for m in model.modules()):
        raise LayerError(
            "fgvis needs nn.ReLU modules to bound (the defence against adversarial evidence); "
            f"{type(model).__name__} has none"
        )


@register
class FGVis(Configured):
    """FGVis: pixel-wise preservation / deletion mask with the ReLU evidence bound."""

    name = "fgvis"
    description = "FGVis: fine-grained pixel mask, optimised with the adversarial-evidence defence"
    family = "Perturbation"
    hyperparameters = {
        "game": Param("str", "preserve", choices=("preserve", "delete")),
        "iterations": Param("int", 300, min=1),
        "l1": Param("float", 1.0, min=0, help="weight of the mask's mean (lambda)"),
        "lr": Param("float", 0.1, min=0, open_min=True, help="Adam's learning rate"),
        "defense": Param("bool", True, help="bound ReLU outputs by the image's (section 3.2)"),
        "fill": FILL,
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }

    @classmethod
    def passes(cls, params):
        return float(params["iterations"]) + 0.5  # + the forward that records h_l(x)

    def attribute(self, inputs, target, logits) -> Explanation:
        hp = self.hp
        if hp["defense"]:
            require_relu_model(self.model, inputs)
        reference = baseline_like(hp["fill"], inputs)
        preserve = hp["game"] == "preserve"

        def optimise(lo: int, hi: int) -> torch.Tensor:
            x, r, t = inputs[lo:hi], reference[lo:hi], target[lo:hi, None]
            start = 1.0 if preserve else 0.0
            mask = torch.full((hi - lo, 1, *x.shape[2:]), start, device=x.device, dtype=x.dtype)
            mask.requires_grad_(True)
            opt = torch.optim.Adam([mask], lr=hp["lr"])
            with contextlib.ExitStack() as stack:
                run = stack.enter_context(evidence_bound(self.model, x)) if hp["defense"] else None
                run = run or self.model
                for _ in range(hp["iterations"]):
                    kept, dropped = (mask, 1 - mask) if preserve else (1 - mask, mask)
                    e = kept * x + dropped * r
                    p = torch.softmax(run(e), 1).gather(1, t)[:, 0]
                    loss = hp["l1"] * mask.flatten(1).mean(1) + (-p if preserve else p)
                    opt.zero_grad()
                    loss.sum().backward()
                    opt.step()
                    with torch.no_grad():
                        mask.clamp_(0, 1)
            return mask.detach()

        with torch.enable_grad():
            maps = run_chunked(optimise, len(inputs), self.chunk(inputs), desc=self.name)
        return self.explanation(maps, target)

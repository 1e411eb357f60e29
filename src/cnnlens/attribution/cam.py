"""CAM family: class activation maps from a convolutional layer's channels.

Each method only says how it weights the channels ``A_k`` of ``layer``
(``"auto"`` = the last spatial stage). Layer outputs are kept in the graph by
a forward hook (:func:`~cnnlens.attribution.common.stored_layer`) and their
gradients come from ``torch.autograd.grad`` — no backward hooks, so in-place
activations after the layer are harmless (the torch-cam approach). Maps are
upsampled to the input size (``upsample="bilinear"``, as Captum's
``LayerAttribution.interpolate``); ``extras["layer_map"]`` keeps the map at the
layer's resolution.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..accel import fast_model, forward_runner
from ..chunking import run_chunked
from ..errors import LayerError
from ..hooks import HookSet
from ..layers import final_linear
from ..params import Param
from ..types import Explanation
from . import register
from .base import AUTO_LAYER, BATCH_SIZE, MEMORY, UPSAMPLE
from .common import (
    Configured,
    max_abs_channels,
    spatial,
    stored_layer,
    target_scores,
    to_input_size,
)
from .gradient import GuidedBackprop


class CamMethod(Configured):
    """Shared driver: store ``A``, take ``dS_t/dA``, weight channels, upsample."""

    pixel_space: ClassVar[bool] = False
    hyperparameters: ClassVar[dict[str, Param]] = {
        "layer": AUTO_LAYER,
        "upsample": Param("str", "bilinear", choices=UPSAMPLE),
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }
    needs_gradient: ClassVar[bool] = True
    family = "CAM"

    @classmethod
    def passes(cls, params):
        return 1.0

    fused_target = True

    def combine(self, a: torch.Tensor, g: torch.Tensor | None, target: torch.Tensor):
        """``[n,1,h,w]`` map from activations ``a`` and gradients ``g``."""
        raise NotImplementedError

    def watch(self, hooks: HookSet, model: nn.Module) -> None:
        """Register extra forward hooks on ``model`` (the model or its channels-last
        copy) for the pass (CAM reads the head's input)."""

    def layer_maps(
        self, inputs: torch.Tensor, target: torch.Tensor | None, layer: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``([N,k,h,w] maps at the layer, targets [N])`` in chunks, one pass each, on
        the fast copy of the model where it applies (accel.fast_model)."""
        model, layout = fast_model(self.model, inputs)

        def run(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.set_grad_enabled(self.needs_gradient):
                with stored_layer(model, layer) as store, HookSet() as hooks:
                    self.watch(hooks, model)
                    out = model(inputs[lo:hi].contiguous(memory_format=layout))
                a = store["out"]
                spatial(layer, a)
                t = self.chunk_targets(out, target, lo, hi)
                g = None
                if self.needs_gradient:
                    (g,) = torch.autograd.grad(target_scores(out, t).sum(), a)
            return self.combine(a.detach(), g, t).contiguous(), t

        return run_chunked(run, len(inputs), self.chunk(inputs, backward=self.needs_gradient))

    def attribute(self, inputs, target, logits) -> Explanation:
        layer = self.layer_name(inputs)
        low, target = self.layer_maps(inputs, target, layer)
        maps = to_input_size(low, tuple(inputs.shape[-2:]), self.hp["upsample"])
        return self.explanation(maps, target, layer_map=low)


@register
class GradCAM(CamMethod):
    """Selvaraju et al. 2017, eqs. (1)-(2): ``ReLU(sum_k mean(dS/dA_k) A_k)``."""

    name = "grad-cam"
    description = "Grad-CAM: channels weighted by their average gradient, ReLU"

    def combine(self, a, g, target):
        return grad_cam(a, g)


def grad_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM at the layer: ``ReLU(sum_k mean_ij(g_k) A_k)``, ``[n,1,h,w]``."""
    weights = g.mean((2, 3), keepdim=True)
    return (weights * a).sum(1, keepdim=True).clamp_min(0)


@register
class GradCAMPlusPlus(CamMethod):
    """Chattopadhay et al. 2018, eq. (19) with the exponential-output assumption.

    The paper's closed form for ``alpha`` assumes the explained score is
    ``exp(S)``: then its second and third derivatives are ``exp(S) g^2`` and
    ``exp(S) g^3`` and ``exp(S)`` cancels, so only first gradients ``g`` of
    the logit are needed: ``alpha = g^2 / (2 g^2 + sum_ab A g^3)``,
    ``w_k = sum_ij alpha ReLU(g)``. (torch-cam uses the same form.)
    """

    name = "grad-cam++"
    description = "Grad-CAM++: pixel-weighted positive gradients (exp-score closed form)"

    def combine(self, a, g, target):
        g2 = g * g
        denom = 2 * g2 + (g2 * g * a).sum((2, 3), keepdim=True)
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        weights = (alpha * g.clamp_min(0)).sum((2, 3), keepdim=True)
        return (weights * a).sum(1, keepdim=True).clamp_min(0)


@register
class LayerCAM(CamMethod):
    """Jiang et al. 2021, eq. (4)-(5): ``ReLU(sum_k ReLU(g_k) * A_k)`` per location."""

    name = "layer-cam"
    description = "Layer-CAM: activations weighted by their positive gradient per location"

    def combine(self, a, g, target):
        return (g.clamp_min(0) * a).sum(1, keepdim=True).clamp_min(0)


@register
class CAM(CamMethod):
    """Zhou et al. 2016, eq. (2), for a layer read by global average pooling + linear head.

    The map is each location's contribution to the target logit,
    ``M = sum_k w_k A_k / (h w)``, so it sums to ``S_t - b_t`` over locations
    and ``ReLU(M)`` equals Grad-CAM exactly. No ReLU is applied (as the
    paper). Raises :class:`LayerError` when the head does not read the
    layer's global average.
    """

    name = "cam"
    description = "CAM: final linear weights on the globally pooled last conv stage"
    needs_gradient = False

    def attribute(self, inputs, target, logits) -> Explanation:
        self._layer = self.layer_name(inputs)
        self._head_name, self._head = final_linear(self.model, inputs[:1])
        return super().attribute(inputs, target, logits)

    def watch(self, hooks: HookSet, model: nn.Module) -> None:
        self._pooled = None

        def keep(_m, inp):
            self._pooled = inp[0]

        hooks.forward_pre(model.get_submodule(self._head_name), keep)

    def combine(self, a, g, target):
        """The head must read the layer's global average, or that of its ReLU (DenseNet's
        ``relu -> adaptive pool -> flatten -> linear``): CAM then maps ``ReLU(A)``."""
        head, pooled = self._head, self._pooled

        def reads(v: torch.Tensor) -> bool:
            return bool(torch.allclose(v.mean((2, 3)), pooled.flatten(1), rtol=1e-4, atol=1e-5))

        if (
            pooled is None
            or a.shape[1] != head.in_features
            or pooled.flatten(1).shape != (a.shape[0], a.shape[1])
            or not (reads(a) or reads(a := a.clamp_min(0)))
        ):
            raise LayerError(
                f"CAM needs the final linear layer {self._head_name!r} to read the global "
                f"average of layer {self._layer!r} {tuple(a.shape[1:])} (or of its ReLU); "
                "something else runs between them (e.g. a LayerNorm in the head), so the "
                "map would not be the logit's decomposition. Use grad-cam"
            )
        w = head.weight[target].to(a.dtype)[:, :, None, None]
        return (w * a).sum(1, keepdim=True) / (a.shape[2] * a.shape[3])


@register
class ScoreCAM(CamMethod):
    """Wang et al. 2020, eq. (4)-(6): channel ``k`` weighted by the softmax score
    of the target for the input masked by ``A_k`` (upsampled, min-max scaled).

    All images x channels run together through the batching helper (forwards
    only).
    """

    name = "score-cam"
    description = "Score-CAM: channels weighted by the score of the input they mask"
    needs_gradient = False

    @classmethod
    def passes(cls, params):
        return None  # one forward per channel of the layer: known once the model is

    def combine(self, a, g, target):
        return a

    def attribute(self, inputs, target, logits) -> Explanation:
        layer = self.layer_name(inputs)
        acts, target = self.layer_maps(inputs, target, layer)
        n, k = acts.shape[:2]
        size = tuple(inputs.shape[-2:])
        flat = acts.flatten(2)
        lo, hi = flat.amin(2), flat.amax(2)
        span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        model = forward_runner(self.model, inputs)

        def run(start: int, stop: int) -> torch.Tensor:
            idx = torch.arange(start, stop, device=inputs.device)
            img, ch = idx // k, idx % k
            act = acts[img, ch][:, None]
            mask = to_input_size(act, size, self.hp["upsample"])
            mask = (mask - lo[img, ch].view(-1, 1, 1, 1)) / span[img, ch].view(-1, 1, 1, 1)
            out = model(inputs[img] * mask)
            return F.softmax(out, 1).gather(1, target[img][:, None])[:, 0]

        scores = run_chunked(run, n * k, self.chunk(inputs, backward=False))
        weights = scores.view(n, k, 1, 1)
        low = (weights * acts).sum(1, keepdim=True).clamp_min(0)
        maps = to_input_size(low, size, self.hp["upsample"])
        return self.explanation(maps, target, layer_map=low)


@register
class GuidedGradCAM(Configured):
    """Selvaraju et al. 2017, section 3: Guided Backprop times upsampled Grad-CAM.

    ``raw`` is the per-channel product ``[N,C,H,W]``; ``maps`` its max |value|
    over channels. ``upsample`` defaults to ``"nearest"`` as Captum's
    ``GuidedGradCam``.
    """

    name = "guided-grad-cam"
    description = "Guided Grad-CAM: guided backprop times the upsampled Grad-CAM map"
    fused_target = True
    family = "CAM"

    @classmethod
    def passes(cls, params):
        return 1.0

    hyperparameters: ClassVar[dict[str, Param]] = {
        "layer": AUTO_LAYER,
        "upsample": Param("str", "nearest", choices=UPSAMPLE),
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }

    def attribute(self, inputs, target, logits) -> Explanation:
        """One forward with the guided ReLU rules and the layer stored, one backward to
        both the input and the layer. When a ReLU runs after the layer (a VGG-style
        classifier), the guided rule would change the layer's gradient, so Grad-CAM
        then takes its own plain pass."""
        layer = self.layer_name(inputs)
        module = self.model.get_submodule(layer)
        relus = [m for m in self.model.modules() if isinstance(m, nn.ReLU)]
        size = tuple(inputs.shape[-2:])
        separate_cam = False  # set when a ReLU runs after the layer

        def run(lo: int, hi: int):
            nonlocal separate_cam
            x = inputs[lo:hi].detach().requires_grad_(True)
            events: list[bool] = []  # True: the layer finished; False: a ReLU finished
            with stored_layer(self.model, layer) as store, HookSet() as hooks:
                hooks.forward(module, lambda *_: events.append(True))
                for relu in relus:
                    hooks.forward(relu, lambda *_: events.append(False))
                out = self.model(x)
            a = store["out"]
            spatial(layer, a)
            t = self.chunk_targets(out, target, lo, hi)
            score = target_scores(out, t).sum()
            last = len(events) - 1 - events[::-1].index(True)
            if all(events[last:]):
                gx, ga = torch.autograd.grad(score, (x, a))
                low = grad_cam(a.detach(), ga)
            else:
                (gx,) = torch.autograd.grad(score, x)
                low = torch.zeros(hi - lo, 1, *a.shape[2:], device=x.device)
                separate_cam = True
            return gx, low, t

        guided = GuidedBackprop(
            self.model, batch_size=self.hp["batch_size"], memory=self.hp["memory"]
        )
        with guided.context(inputs):
            gx, low, target = run_chunked(run, len(inputs), guided.chunk(inputs))
        if separate_cam:  # a ReLU after the layer: Grad-CAM by itself
            cam = GradCAM(
                self.model, layer=layer, batch_size=self.hp["batch_size"], memory=self.hp["memory"]
            )
            low = cam.layer_maps(inputs, target, layer)[0]
        raw = gx * to_input_size(low, size, self.hp["upsample"])
        return self.explanation(max_abs_channels(raw), target, raw=raw, layer_map=low)

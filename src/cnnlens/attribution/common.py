"""Pieces shared by the gradient, propagation and CAM families.

* :class:`Configured` — a :class:`Method` with declared keyword hyperparameters
  and their defaults (unknown names raise :class:`InputError`);
* :func:`stored_layer` — a layer's output kept in the autograd graph for
  ``torch.autograd.grad`` (the torch-cam approach; no backward hooks);
* :func:`target_scores` — the logit of each image's target class;
* channel reductions from per-channel attributions ``raw`` to ``maps``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, LayerError, TargetError
from ..gradmode import with_autograd
from ..hooks import frozen, replace_output
from ..layers import auto_layer, get_layer
from ..params import defaults as param_defaults
from ..types import Explanation
from .base import Method, check_inputs, resolve_target


class Configured(Method):
    """A method whose ``self.hp`` holds its declared defaults updated with what the
    user passed (``defaults`` is derived from :attr:`Method.hyperparameters`).
    ``uses_logits = False`` tells wrappers (SmoothGrad) they may pass
    ``logits=None`` to :meth:`attribute` and save a forward pass.
    """

    defaults: ClassVar[dict[str, Any]] = {}  # set from ``hyperparameters``
    uses_logits: ClassVar[bool] = False
    fused_target: ClassVar[bool] = False
    _spec: Any = None

    @with_autograd
    def __call__(
        self, inputs: torch.Tensor, target: int | torch.Tensor | None = None
    ) -> Explanation:
        """As :meth:`Method.__call__`; ``fused_target`` methods skip its extra forward.

        They resolve (and validate) the target from the logits of their own
        first pass over each chunk (:meth:`chunk_targets`), so a single-pass
        method costs one forward+backward, not two forwards and a backward.
        """
        if not self.fused_target:
            return super().__call__(inputs, target)
        inputs = check_inputs(inputs, self.model)
        device = next(self.model.parameters(), torch.empty(0)).device
        inputs = inputs.to(device)
        if isinstance(target, torch.Tensor):
            target = target.to(device).long().flatten()
            if target.numel() == 1:
                target = target.expand(len(inputs)).clone()
            if target.numel() != len(inputs):
                raise TargetError(
                    f"target must hold one class per image ({len(inputs)}), got {target.numel()}"
                )
        elif target is not None and (not isinstance(target, int) or isinstance(target, bool)):
            raise TargetError(
                f"target must be None, an int or a tensor [N], got {type(target).__name__}"
            )
        self._spec = target
        try:
            with frozen(self.model):
                explanation = self.attribute(inputs, None, None)
        finally:
            self._spec = None
        explanation.maps = explanation.maps.float()
        return explanation

    def chunk_targets(
        self, out: torch.Tensor, target: torch.Tensor | None, lo: int, hi: int
    ) -> torch.Tensor:
        """Targets of images ``[lo, hi)``: given ones, or resolved from this chunk's logits."""
        if target is not None:
            return target[lo:hi]
        spec = self._spec[lo:hi] if isinstance(self._spec, torch.Tensor) else self._spec
        resolved, _ = resolve_target(lambda _x: out.detach(), out, spec)
        return resolved

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.defaults = param_defaults(cls.hyperparameters)

    def __init__(self, model: nn.Module, **hyperparameters: Any) -> None:
        super().__init__(model, **hyperparameters)
        self.hp = {**self.defaults, **hyperparameters}

    def layer_name(self, inputs: torch.Tensor, key: str = "layer") -> str:
        """The layer named by hyperparameter ``key``; ``"auto"`` = last spatial conv stage."""
        name = self.hp.get(key)
        if name == "auto":
            return auto_layer(self.model, inputs[:1])
        if not isinstance(name, str):
            raise InputError(f"{key} must be a layer name or 'auto', got {name!r}")
        get_layer(self.model, name)
        return name


def target_scores(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``logits[i, target[i]]`` as ``[N]``."""
    return logits.gather(1, target[:, None].to(logits.device))[:, 0]


@contextlib.contextmanager
def stored_layer(model: nn.Module, layer: str) -> Iterator[dict[str, torch.Tensor]]:
    """Keep ``layer``'s output (``store["out"]``) as a graph node gradients can reach.

    The forward continues with a clone, so an in-place operation after the
    layer (``nn.ReLU(inplace=True)``) cannot overwrite the stored tensor; if
    nothing upstream requires gradients the stored output becomes a leaf that
    does. A layer that runs several times keeps its last output.
    """
    store: dict[str, torch.Tensor] = {}

    def keep(out: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise LayerError(f"layer {layer!r} returns {type(out).__name__}, not a tensor")
        if not out.requires_grad:
            out = out.detach().requires_grad_(True)
        store["out"] = out
        return out.clone()

    with replace_output(model, layer, keep):
        yield store


def spatial(at: str, tensor: torch.Tensor) -> None:
    """Feature attribution needs a ``[N,C,H,W]`` layer output."""
    if tensor.dim() != 4:
        raise LayerError(
            f"at={at!r} gives a {tuple(tensor.shape)} output; feature attribution needs a "
            "layer with a [N,C,H,W] output (a convolutional stage)"
        )


def sum_channels(raw: torch.Tensor) -> torch.Tensor:
    """Signed attribution per pixel: the sum over channels (IG, DeepLIFT, LRP convention)."""
    return raw.sum(1, keepdim=True)


def max_abs_channels(raw: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude per pixel: max over channels of ``|raw|`` (Simonyan et al. 2014)."""
    return raw.abs().amax(1, keepdim=True)


def to_input_size(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear"):
    """Upsample ``[N,1,h,w]`` maps to the input's ``size`` (no-op when equal)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if mode not in ("bilinear", "nearest", "bicubic"):
        raise InputError(f"upsample must be 'bilinear', 'nearest' or 'bicubic', got {mode!r}")
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(maps, size=size, mode=mode, **kwargs)

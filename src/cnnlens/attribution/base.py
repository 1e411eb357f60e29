"""The contract every attribution method keeps.

A method is a small object: ``Method(model, **hyperparameters)`` then
``method(inputs, target=None) -> Explanation``. The base class checks the
inputs and the target, runs :meth:`Method.attribute` with the model frozen
(eval mode, parameters not requiring gradients; everything restored after,
also on an error) and packs the result. A call works inside ``torch.no_grad()``
and ``torch.inference_mode()``: it enables autograd locally
(:mod:`cnnlens.gradmode`). Subclasses implement ``attribute``
only, and run every sampled/stepped computation through
:mod:`cnnlens.chunking`.

Hyperparameter vocabulary shared by all methods: ``steps``, ``samples``,
``noise``, ``baseline``, ``layer``, ``at``, ``seed``, ``batch_size``, ``memory``,
``window``, ``stride``, ``n_masks``, ``s``, ``p1``, ``n_samples``,
``segments``, ``iterations``, ``area``, ``beta``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..chunking import MEMORY, chunk_size  # noqa: F401  (MEMORY: the shared memory budget Param, for methods)
from ..errors import InputError, TargetError
from ..gradmode import usable, with_autograd
from ..hooks import frozen
from ..params import Param, check_names, check_params, defaults
from ..types import Explanation

BATCH_SIZE = Param("int", None, min=1, none=True, help="images per chunk; none: automatic")
SEED = Param("int", 0, help="seed of the method's random draws")
AUTO_LAYER = Param("layer", "auto", choices=("auto",), help="layer name; auto: last spatial stage")
AT_LAYER = Param("layer", None, none=True, help="attribute a layer's output; none: the input")
UPSAMPLE = ("bilinear", "nearest", "bicubic")
BASELINE = Param(
    "float|tensor",
    "zeros",
    min=0,
    max=0,
    choices=("zeros", "blur", "uniform"),
    none=True,
    help="'zeros', 'blur', 'uniform' or a tensor broadcastable to the inputs",
)
FILL = Param("float|tensor", 0.0, help="fill of removed pixels: a number or a tensor")


# A method's ``family`` -> the heading the report shows its maps under, in report order.
FAMILIES = {
    "Gradient": "Gradients",
    "Propagation": "Propagation",
    "CAM": "Class activation maps",
    "Perturbation": "Perturbation",
    "Surrogate": "Surrogate models",
    "Bottleneck": "Information bottleneck",
    "Other": "Other methods",
}


@dataclass
class Setup:
    """What a method's :meth:`Method.prepare` may build its parts from: the model, the
    training images (``train``: a callable that loads them when first asked, or None),
    the data set's name, the saved model's folder, a ``folder`` to save prepared parts
    in (None: keep them in memory) and ``images``, how many training images a
    preparation may use (None: its own default)."""

    model: nn.Module
    train: Callable[[], Any] | None = None
    data: str | None = None
    model_path: Path | None = None
    folder: Path | None = None
    images: int | None = None


def check_inputs(inputs: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
    """``inputs`` must be a finite floating ``[N,C,H,W]`` tensor (that ``model``, when
    given, takes: :func:`check_fit`)."""
    if not isinstance(inputs, torch.Tensor):
        raise InputError(f"inputs must be a torch.Tensor [N,C,H,W], got {type(inputs).__name__}")
    if inputs.dim() != 4:
        raise InputError(f"inputs must be [N,C,H,W], got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise InputError(f"inputs must be floating point (normalised images), got {inputs.dtype}")
    if inputs.shape[0] == 0:
        raise InputError("inputs hold no image (N = 0)")
    if not torch.isfinite(inputs).all():
        bad = int((~torch.isfinite(inputs)).flatten(1).any(1).sum())
        raise InputError(f"inputs contain NaN or infinite values in {bad} image(s)")
    if model is not None:
        check_fit(model, inputs)
    return inputs


def check_fit(model: nn.Module, inputs: torch.Tensor) -> None:
    """``inputs`` must have the channels of ``model``'s first convolution and the dtype
    of its first floating parameter: an :class:`InputError` before any pass, where the
    forward would fail with a raw ``RuntimeError`` deep inside the model."""
    if not isinstance(model, nn.Module):
        return
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and conv.in_channels > 0 and inputs.shape[1] != conv.in_channels:
        raise InputError(
            f"the model takes {conv.in_channels}-channel images (its first convolution), "
            f"got inputs with {inputs.shape[1]} channel(s) {tuple(inputs.shape)}"
        )
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is not None and inputs.dtype != param.dtype:
        raise InputError(
            f"inputs are {inputs.dtype} but the model's parameters are {param.dtype}; "
            f"convert the inputs with .to({param.dtype})"
        )


def resolve_target(
    model: nn.Module, inputs: torch.Tensor, target: int | torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets ``[N]`` (long, on the inputs' device) and the logits of ``inputs``.

    ``None`` means the predicted class; an ``int`` applies to every image; a
    tensor must hold one class per image. Out-of-range classes raise
    :class:`TargetError`.
    """
    with torch.no_grad():
        logits = model(inputs)
    if logits.dim() != 2:
        raise InputError(f"the model must return logits [N,K], got shape {tuple(logits.shape)}")
    n, k = logits.shape
    if target is None:
        return logits.argmax(1), logits
    if isinstance(target, int) and not isinstance(target, bool):
        t = torch.full((n,), target, dtype=torch.long, device=inputs.device)
    elif isinstance(target, torch.Tensor):
        t = target.to(inputs.device).long().flatten()
        if t.numel() == 1 and n > 1:
            t = t.expand(n).clone()
        if t.numel() != n:
            raise TargetError(f"target must hold one class per image ({n}), got {t.numel()}")
    else:
        raise TargetError(
            f"target must be None, an int or a tensor [N], got {type(target).__name__}"
        )
    if int(t.min()) < 0 or int(t.max()) >= k:
        raise TargetError(
            f"target classes must lie in [0, {k}) for this model, got {t.unique().tolist()}"
        )
    return t, logits


def check_hyperparameters(method: str, given: dict[str, Any], valid: frozenset[str]) -> None:
    """An :class:`InputError` naming each unknown hyperparameter, with the closest valid one."""
    check_names(method, given, valid, "hyperparameter")


class Method:
    """Base class of attribution methods (see the module docstring).

    Class attributes: ``name`` (registry name), ``description`` (one line),
    ``pixel_space`` (``True`` when maps live on the input and ``raw`` holds
    per-channel attributions), ``hyperparameters`` (``{name: Param}``: the type,
    range, words and default of each; :meth:`check_params` checks given values
    against it, and the constructor, ``cnnlens.explain``, ``cnnlens.evaluate``,
    the CLI and job files all go through it).

    The facts the faces read (CLI, jobs, report, explorer), so none lists names:
    ``family`` (a key of :data:`FAMILIES`), ``complete`` (maps sum to
    ``f(x) - f(baseline)``: the completeness metric applies), :meth:`passes`
    (model passes per image), ``needs`` (what :meth:`prepare` builds, in words;
    empty: the method runs on the model alone) and :meth:`prepare`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    pixel_space: ClassVar[bool] = True
    hyperparameters: ClassVar[Mapping[str, Param]] = {}
    family: ClassVar[str] = "Other"
    complete: ClassVar[bool] = False
    needs: ClassVar[str] = ""

    @classmethod
    def passes(cls, params: Mapping[str, Any]) -> float | None:
        """Forward+backward equivalents per image with ``params`` (every declared
        hyperparameter, defaults filled in); None when unknown (the report times it)."""
        return None

    @classmethod
    def cost(cls, params: Mapping[str, Any] | None = None) -> float | None:
        """:meth:`passes` at ``params`` over the declared defaults."""
        return cls.passes({**defaults(cls.hyperparameters), **(params or {})})

    @classmethod
    def prepare(cls, setup: Setup, params: Mapping[str, Any]) -> dict[str, Any]:
        """Build what the method needs before it runs (``needs``) from ``setup`` and
        return it as extra hyperparameters (``{}`` when ``params`` already hold it).
        A :class:`~cnnlens.errors.CnnlensError` says what is missing and how to get it."""
        return {}

    def __init__(self, model: nn.Module, **hyperparameters: Any) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.check_params(hyperparameters, model)
        self.model = model
        with torch.inference_mode(False):
            self.params = {k: usable(v) for k, v in hyperparameters.items()}

    @classmethod
    def accepted(cls, params: dict[str, Any] | None = None) -> frozenset[str]:
        """Hyperparameter names this method takes; ``params`` may change the answer
        (SmoothGrad takes its base method's names too)."""
        return frozenset(cls.hyperparameters)

    @classmethod
    def check_params(cls, params: Any, model: nn.Module | None = None) -> dict[str, Any]:
        """Check ``params`` against :attr:`hyperparameters` (names, types, ranges, words;
        layer names against ``model`` when given), before any work: one
        :class:`InputError` naming the first bad one. Returns them as a dict."""
        return check_params(cls.name, params, cls.hyperparameters, model, "hyperparameter")

    @with_autograd
    def __call__(
        self, inputs: torch.Tensor, target: int | torch.Tensor | None = None
    ) -> Explanation:
        inputs = check_inputs(inputs, self.model)
        device = next(self.model.parameters(), torch.empty(0)).device
        inputs = inputs.to(device)
        with frozen(self.model):
            targets, logits = resolve_target(self.model, inputs, target)
            explanation = self.attribute(inputs, targets, logits)
        explanation.maps = explanation.maps.float()
        return explanation

    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor, logits: torch.Tensor
    ) -> Explanation:
        """Compute the explanation; the model is already frozen and in eval mode."""
        raise NotImplementedError

    def chunk(self, inputs: torch.Tensor, *, backward: bool = True) -> int:
        """Items per chunk of an expanded batch (:func:`~cnnlens.chunking.chunk_size`
        within the ``memory`` budget, or ``batch_size``), for every method."""
        settings = getattr(self, "hp", self.params)
        return chunk_size(
            self.model,
            inputs[:1],
            backward=backward,
            batch_size=settings.get("batch_size"),
            memory=settings.get("memory"),
        )

    def explanation(
        self,
        maps: torch.Tensor,
        target: torch.Tensor,
        *,
        raw: torch.Tensor | None = None,
        **extras: torch.Tensor,
    ) -> Explanation:
        """Pack a result with this method's name and hyperparameters."""
        return Explanation(
            maps=maps.detach(),
            target=target,
            method=self.name,
            params=dict(self.params),
            raw=None if raw is None else raw.detach(),
            extras={k: v.detach() for k, v in extras.items()},
        )

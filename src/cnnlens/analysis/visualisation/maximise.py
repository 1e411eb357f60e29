"""Activation maximisation: the input a unit responds to most (the survey, paper 001, section 3.4).

Gradient ascent on an image for a class logit (Simonyan et al. 2013), a channel's
mean activation or one neuron of a named layer (Erhan et al. 2009; Yosinski et al.
2015), with the regularisers that make the result readable: random jitter and
scale at every step, a total-variation penalty (Mahendran & Vedaldi 2015), a
periodic Gaussian blur (Yosinski et al. 2015), and a pixel or Fourier
parameterisation with optional colour decorrelation (Olah et al. 2017, Lucid;
:mod:`.image_params`). The image lives in [0, 1] (a sigmoid) and reaches the
model normalised with the data set's mean and std.

Every seed of every objective is one image of one batch: a step is one forward
and one backward pass for all of them (chunked by :func:`~cnnlens.chunking.chunk_size`
when they do not fit in memory), on the model's device. Each image draws its start
and its transforms from its own generator, so it depends on its seed alone, not on
the batch it ran in. The model runs under :func:`~cnnlens.hooks.frozen` (eval mode,
no parameter gradients): its mode, parameters and hooks are as before afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from ...accel import fast_model
from ...chunking import chunk_size
from ...errors import InputError, LayerError, TargetError
from ...hooks import capture_outputs, frozen
from ...layers import get_layer
from ...progress import Progress
from .image_params import (
    PARAMETERISATIONS,
    decorrelation_matrix,
    image_param,
    jitter,
    random_scale,
    total_variation,
)
from .redirected_relu import redirected_relus

CLASS_KINDS = ("logit", "log_softmax")  # read from the model's output
KINDS = (*CLASS_KINDS, "channel", "neuron")


@dataclass(frozen=True)
class Objective:
    """What to maximise: ``Objective.logit(k)`` (the class score, as Simonyan et al. 2013),
    ``Objective.log_softmax(k)`` (the class's log probability: also lowers the other
    classes), ``Objective.channel("layer3", c)`` (the channel's mean over positions,
    Lucid's ``channel``) or ``Objective.neuron("layer3", c, (y, x))`` (one position,
    default the centre). ``-objective`` minimises it (Olah et al.'s negative optimisation)."""

    kind: str
    index: int
    layer: str | None = None
    position: tuple[int, int] | None = None
    sign: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"objective kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        what = "class" if self.is_class else "channel"
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise TargetError(f"{what} must be an integer >= 0, got {self.index!r}")
        if not self.is_class and not self.layer:
            raise InputError(f"a {self.kind} objective needs a layer name")

    @classmethod
    def logit(cls, target: int) -> Objective:
        return cls("logit", _integer(target, "class"))

    @classmethod
    def log_softmax(cls, target: int) -> Objective:
        return cls("log_softmax", _integer(target, "class"))

    @classmethod
    def channel(cls, layer: str, channel: int) -> Objective:
        return cls("channel", _integer(channel, "channel"), layer)

    @classmethod
    def neuron(cls, layer: str, channel: int, position: tuple[int, int] | None = None) -> Objective:
        if position is not None:
            position = tuple(_integer(v, "neuron position") for v in position)
            if len(position) != 2:
                raise InputError(f"a neuron position is (y, x), got {position!r}")
        return cls("neuron", _integer(channel, "channel"), layer, position)

    def __neg__(self) -> Objective:
        return replace(self, sign=-self.sign)

    @property
    def is_class(self) -> bool:
        """True for an objective on the model's output (a class), not on a layer."""
        return self.kind in CLASS_KINDS

    @property
    def name(self) -> str:
        sign = "-" if self.sign < 0 else ""
        if self.is_class:
            what = "class" if self.kind == "logit" else "log softmax of class"
            return f"{sign}{what} {self.index}"
        where = "" if self.kind == "channel" else f" at {self.position or 'centre'}"
        return f"{sign}{self.layer} {self.kind} {self.index}{where}"

    def value(self, output: torch.Tensor) -> torch.Tensor:
        """The maximised quantity ``[N]`` from the model's output (a class) or the layer's."""
        if self.is_class:
            if output.dim() != 2:
                raise InputError(
                    f"a class objective needs logits [N, K]; the model returns shape "
                    f"{tuple(output.shape)}"
                )
            if self.index >= output.shape[1]:
                raise TargetError(
                    f"class {self.index} is out of range for a model with {output.shape[1]} classes"
                )
            if self.kind == "log_softmax":
                output = output.float().log_softmax(1)
            return self.sign * output[:, self.index]
        if not isinstance(output, torch.Tensor) or output.dim() < 2:
            raise LayerError(f"layer {self.layer!r} gives no [N, C, ...] tensor to maximise")
        if self.index >= output.shape[1]:
            raise TargetError(
                f"channel {self.index} is out of range: layer {self.layer!r} has "
                f"{output.shape[1]} channels"
            )
        unit = output[:, self.index]
        if self.kind == "channel":
            return self.sign * (unit.flatten(1).mean(1) if unit.dim() > 1 else unit)
        if unit.dim() != 3:
            raise LayerError(
                f"a neuron objective needs a spatial map [N, C, H, W]; layer {self.layer!r} "
                f"gives shape {tuple(output.shape)}"
            )
        h, w = unit.shape[-2:]
        y, x = self.position or (h // 2, w // 2)
        if not (0 <= y < h and 0 <= x < w):
            raise TargetError(
                f"neuron position {(y, x)} lies outside layer {self.layer!r}'s {h}x{w} map"
            )
        return self.sign * unit[:, y, x]


def _integer(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | torch.Tensor):
        raise TargetError(f"{what} must be an integer, got {value!r}")
    return int(value)


def as_objective(objective: Objective | int) -> Objective:
    """An :class:`Objective`; a plain integer is a class logit."""
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, int) and not isinstance(objective, bool):
        return Objective.logit(objective)
    raise InputError(
        "objective must be an Objective (Objective.logit / channel / neuron) or a class index, "
        f"got {objective!r}"
    )


@dataclass(frozen=True, eq=False)
class Maximisation:
    """The images that maximise one objective, one per seed (on the model's device).

    ``pixels`` ``[S, C, H, W]`` in [0, 1]; ``images``: the same normalised for the model;
    ``history`` ``[steps, S]``: the objective (sign included) at each step, on that step's
    jittered image before the update; ``final`` ``[S]``: the objective on the final images
    as they are; ``logits`` ``[S, K]``: the model's output on them; ``parameters``: the
    settings that made them.
    """

    objective: Objective
    seeds: tuple[int, ...]
    pixels: torch.Tensor
    images: torch.Tensor
    history: torch.Tensor
    final: torch.Tensor
    logits: torch.Tensor
    parameters: dict

    @property
    def probabilities(self) -> torch.Tensor:
        """Softmax of ``logits``, ``[S, K]``."""
        return self.logits.float().softmax(1)

    def to_dict(self) -> dict:
        """Plain values for JSON (images left out)."""
        o = self.objective
        out = {
            "objective": o.name,
            "kind": o.kind,
            "index": o.index,
            "layer": o.layer,
            "position": None if o.position is None else list(o.position),
            "sign": o.sign,
            "seeds": list(self.seeds),
            "final": self.final.tolist(),
            "predicted": self.logits.argmax(1).tolist(),
            "history": self.history.t().tolist(),  # one list of steps per seed
            "parameters": self.parameters,
        }
        if o.is_class:
            out["target_probability"] = self.probabilities[:, o.index].tolist()
        return out


def maximise(model: nn.Module, objective: Objective | int, **options) -> Maximisation:
    """Images maximising ``objective`` (an :class:`Objective` or a class index), one per
    seed; ``options`` as for :func:`maximise_all`."""
    return maximise_all(model, [objective], **options)[0]


def maximise_all(
    model: nn.Module,
    objectives: Sequence[Objective | int],
    *,
    parameterisation: str = "fourier",
    steps: int = 256,
    lr: float = 0.05,
    seeds: Sequence[int] = (0, 1, 2, 3),
    jitter: int | str = "auto",
    scale: tuple[float, float] | None = None,
    tv: float = 0.0,
    blur: float | None = None,
    blur_every: int = 4,
    decorrelate: bool | torch.Tensor | None = None,
    redirect_steps: int = 16,
    image_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int | None = None,
    desc: str | None = None,
) -> list[Maximisation]:
    """Activation maximisation of several objectives at once, one :class:`Maximisation` each.

    Adam (``lr``) for ``steps`` steps on a ``parameterisation`` (``"fourier"`` or
    ``"pixel"``) of one image per (objective, seed). Each step the images are translated
    by up to ``jitter`` pixels (``"auto"``: 1/16 of the side; 0: none), zoomed by a factor
    drawn from ``scale = (lo, hi)`` if given, and the objective minus ``tv`` times the total
    variation (:func:`~.image_params.total_variation`) is maximised; every ``blur_every``
    steps the image before its sigmoid is blurred by a Gaussian of ``blur`` pixels.
    ``decorrelate``: True for Lucid's ImageNet colour matrix, or a ``[C, C]`` matrix
    (:func:`~.image_params.colour_decorrelation` of the data). For the first
    ``redirect_steps`` steps an image whose gradient an ``nn.ReLU`` blocks entirely gets
    Lucid's redirected gradient there instead (:mod:`.redirected_relu`), so a unit that
    is dead on the grey start still moves (after that, the true gradient).

    ``image_shape`` ``(C, H, W)``, ``mean`` and ``std`` default to what a saved model
    records (``model.meta``, :func:`cnnlens.load`); without ``mean``/``std`` the model is
    taken to read [0, 1] images. ``batch_size`` caps the images per chunk; ``desc`` shows
    a progress bar over the steps on a terminal.
    """
    objectives = [as_objective(o) for o in objectives]
    if not objectives:
        raise InputError("no objective to maximise")
    settings = _settings(
        model, parameterisation, steps, lr, seeds, jitter, scale, tv, blur, blur_every,
        redirect_steps, image_shape, mean, std,
    )  # fmt: skip
    for objective in objectives:
        if objective.layer is not None:
            get_layer(model, objective.layer)
    shape = settings["image_shape"]
    matrix = decorrelation_matrix(decorrelate, shape[0])
    settings["decorrelate"] = (
        "imagenet" if decorrelate is True else "matrix" if matrix is not None else False
    )
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    seeds = settings.pop("seeds")
    rows = [(o, seed) for o in objectives for seed in seeds]
    with frozen(model):
        probe = torch.zeros(1, *shape, device=device, dtype=dtype)
        size = chunk_size(model, probe, backward=True, batch_size=batch_size)
        parts = [
            _optimise(model, rows[start : start + size], settings, matrix, probe, desc)
            for start in range(0, len(rows), size)
        ]
    pixels, history, final, logits = zip(*parts)
    pixels, history = torch.cat(pixels), torch.cat(history, 1)
    final, logits = torch.cat(final), torch.cat(logits)
    normalise = _normaliser(settings["mean"], settings["std"], device)
    results = []
    for i, objective in enumerate(objectives):
        rows_of = slice(i * len(seeds), (i + 1) * len(seeds))
        results.append(
            Maximisation(
                objective=objective,
                seeds=tuple(seeds),
                pixels=pixels[rows_of],
                images=normalise(pixels[rows_of]),
                history=history[:, rows_of],
                final=final[rows_of],
                logits=logits[rows_of],
                parameters=dict(settings),
            )
        )
    return results


def _settings(
    model, parameterisation, steps, lr, seeds, jitter, scale, tv, blur, blur_every,
    redirect_steps, image_shape, mean, std,
) -> dict:  # fmt: skip
    """Every option checked, with defaults resolved (as recorded in ``parameters``)."""
    if parameterisation not in PARAMETERISATIONS:
        raise InputError(
            f"parameterisation must be one of {', '.join(PARAMETERISATIONS)}, "
            f"got {parameterisation!r}"
        )
    _whole(steps, "steps", 1)
    if not _positive(lr):
        raise InputError(f"lr must be a positive number, got {lr!r}")
    seeds = tuple(seeds) if isinstance(seeds, Sequence) else (seeds,)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise InputError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    meta = getattr(model, "meta", None)
    meta = meta if isinstance(meta, dict) else {}
    shape = image_shape if image_shape is not None else meta.get("input_shape")
    if shape is None:
        raise InputError(
            "image_shape (C, H, W) is needed: the model records no input shape (a model "
            "saved by cnnlens does; or pass the data set's image_shape)"
        )
    shape = tuple(shape)
    if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise InputError(f"image_shape must be three positive integers (C, H, W), got {shape!r}")
    if jitter == "auto":
        jitter = max(1, round(min(shape[1:]) / 16))
    _whole(jitter, "jitter (pixels, or 'auto')", 0)
    if scale is not None:
        scale = tuple(float(v) for v in scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise InputError(f"scale must be (lo, hi) with 0 < lo <= hi, got {scale!r}")
    if not (_positive(tv) or tv == 0):
        raise InputError(f"tv must be a number >= 0, got {tv!r}")
    if blur is not None and not _positive(blur):
        raise InputError(f"blur must be None or a positive sigma in pixels, got {blur!r}")
    _whole(blur_every, "blur_every", 1)
    _whole(redirect_steps, "redirect_steps", 0)
    mean = _per_channel(mean if mean is not None else meta.get("mean"), 0.0, "mean", shape[0])
    std = _per_channel(std if std is not None else meta.get("std"), 1.0, "std", shape[0])
    if min(std) <= 0:
        raise InputError(f"std must be positive, got {std}")
    return {
        "parameterisation": parameterisation,
        "steps": steps,
        "lr": float(lr),
        "seeds": seeds,
        "jitter": jitter,
        "scale": None if scale is None else list(scale),
        "tv": float(tv),
        "blur": None if blur is None else float(blur),
        "blur_every": blur_every,
        "redirect_steps": redirect_steps,
        "image_shape": list(shape),
        "mean": mean,
        "std": std,
    }


def _whole(value, what: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value
    ) and value > 0  # fmt: skip


def _per_channel(values, default: float, what: str, channels: int) -> list[float]:
    if values is None:
        return [default] * channels
    values = [float(v) for v in values]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels or not all(math.isfinite(v) for v in values):
        raise InputError(f"{what} needs one finite value per channel ({channels}), got {values}")
    return values


def _normaliser(mean: list[float], std: list[float], device):
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return lambda pixels: (pixels - m) / s


def _optimise(
    model: nn.Module,
    rows: list[tuple[Objective, int]],
    settings: dict,
    matrix: torch.Tensor | None,
    probe: torch.Tensor,
    desc: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optimise one chunk of (objective, seed) images; pixels, history, final, logits.
    ``probe``: one zero image of the model's shape, device and dtype."""
    device, dtype = probe.device, probe.dtype
    shape = settings["image_shape"]
    generators = [torch.Generator().manual_seed(seed) for _o, seed in rows]
    image = image_param(
        settings["parameterisation"], shape, generators, device=device, decorrelate=matrix
    )
    adam = torch.optim.Adam(image.params, lr=settings["lr"])
    normalise = _normaliser(settings["mean"], settings["std"], device)
    layers = sorted({o.layer for o, _s in rows if o.layer is not None})
    # the fast copy (cnnlens.accel): BN folded for logit objectives; a plain copy
    # (same module names, nothing in place) where a layer is hooked
    net, layout = fast_model(model, probe, "exact" if layers else "folded")
    groups = _groups(rows)
    jitter_px, scale, tv = settings["jitter"], settings["scale"], settings["tv"]
    blur, blur_every = settings["blur"], settings["blur_every"]

    def objective(x: torch.Tensor, store: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = net(normalise(x).to(dtype).contiguous(memory_format=layout))
        values = [
            o.value(logits[rows_of] if o.layer is None else store[o.layer][rows_of])
            for o, rows_of in groups
        ]
        return torch.cat(values), logits

    history = []
    warm = min(settings["redirect_steps"], settings["steps"])
    # the redirect's hooks go on first, so a hooked layer that is itself a ReLU is seen
    # through it; they come off after the warm-up, the layer hooks stay
    with contextlib.ExitStack() as redirect:
        if warm:
            redirect.enter_context(redirected_relus(net, probe.contiguous(memory_format=layout)))
        bar = Progress(total=settings["steps"], desc=desc, enabled=desc is not None)
        with bar, capture_outputs(net, layers) as store:
            for step in range(settings["steps"]):
                if step == warm:
                    redirect.close()
                pixels = image.pixels()
                seen = pixels
                if jitter_px:
                    seen = jitter(seen, [_shift(g, jitter_px) for g in generators])
                if scale is not None:
                    seen = random_scale(seen, [_factor(g, scale) for g in generators])
                value, _ = objective(seen, store)
                gain = value - tv * total_variation(pixels) if tv else value
                grads = torch.autograd.grad(gain.sum(), image.params)
                for p, g in zip(image.params, grads, strict=True):
                    p.grad = -g
                adam.step()
                history.append(value.detach())
                if blur is not None and (step + 1) % blur_every == 0:
                    image.blur_(blur)
                bar.update(1)
            redirect.close()
            with torch.no_grad():
                pixels = image.pixels()
                final, logits = objective(pixels, store)
    return pixels.detach(), torch.stack(history), final, logits.detach().float()


def _groups(rows: list[tuple[Objective, int]]) -> list[tuple[Objective, slice]]:
    """Consecutive rows with the same objective, as (objective, slice of rows)."""
    groups: list[tuple[Objective, slice]] = []
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i][0] is not rows[start][0]:
            groups.append((rows[start][0], slice(start, i)))
            start = i
    return groups


def _shift(generator: torch.Generator, pixels: int) -> tuple[int, int]:
    dy, dx = torch.randint(-pixels, pixels + 1, (2,), generator=generator).tolist()
    return dy, dx


def _factor(generator: torch.Generator, scale: tuple[float, float]) -> float:
    lo, hi = scale
    return lo + (hi - lo) * float(torch.rand((), generator=generator))

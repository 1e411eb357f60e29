"""Information bottleneck attribution (Schulz et al. 2020, the per-sample
bottleneck DRIB's IB module uses; paper 000).

At a chosen layer the activations ``R`` are replaced by
``Z = lambda R + (1 - lambda) eps``, ``eps ~ N(mu, sigma^2)`` (per-element
statistics of the layer on a data set, :func:`estimate_statistics`), clamped at
0 when the layer follows a ReLU. ``lambda = blur_1(sigmoid(alpha))`` with
``alpha`` initialised at 5 and optimised with Adam to minimise
``CE + beta * mean capacity``, where the capacity of an element is the KL
divergence ``-1/2 [1 + ln (1-lambda)^2 - (lambda r)^2 - (1-lambda)^2]`` with
``r = (R - mu) / sigma`` (nats). The map is the capacity summed over channels,
in bits, resized to the input so that the total number of bits is preserved.

Unlike the reference implementation (batch size 1), images are optimised
together: the loss is summed over images and Adam acts per element, so every
image follows the path it would follow alone. Each step is one forward and
backward of ``images x samples`` noise copies, chunked by :mod:`cnnlens.chunking`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..chunking import chunk_size, run_chunked
from ..errors import InputError
from ..hooks import capture_outputs, frozen, replace_output
from ..io import save_tensors
from ..layers import auto_layer, get_layer
from ..params import Param
from ..placement import model_device
from ..types import Explanation
from . import register
from ._perturb import generator, positive_float, positive_int
from .base import AUTO_LAYER, BATCH_SIZE, MEMORY, SEED, Method

MIN_STD = 0.01


@dataclass
class LayerStatistics:
    """Per-element mean and std ``[C,H,W]`` of one layer's output over ``count`` images."""

    layer: str
    mean: torch.Tensor
    std: torch.Tensor
    count: int

    def save(self, path: str | os.PathLike) -> Path:
        """Write to a safetensors file (atomically) so the estimate is made once."""
        return save_tensors(
            path,
            {"mean": self.mean, "std": self.std},
            metadata={"layer": self.layer, "count": str(self.count)},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> LayerStatistics:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise InputError(f"no layer statistics file at {str(path)!r}")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            mean, std = f.get_tensor("mean"), f.get_tensor("std")
        if "layer" not in meta:
            raise InputError(f"{str(path)!r} is not a cnnlens layer statistics file")
        return cls(meta["layer"], mean, std, int(meta.get("count", 0)))


def estimate_statistics(
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    *,
    batch_size: int | None = None,
    min_std: float = MIN_STD,
    path: str | os.PathLike | None = None,
) -> LayerStatistics:
    """Mean and std of ``layer``'s output over ``images`` ``[M,C,H,W]`` (Welford / Chan).

    Chunks are merged with the parallel form of Welford's update, so the
    result does not depend on the chunk size; the std is floored at
    ``min_std``. With ``path``, an existing file for the same layer is loaded
    instead, and a new estimate is saved there.
    """
    if path is not None and Path(path).is_file():
        stats = LayerStatistics.load(path)
        if stats.layer == layer:
            return stats
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) < 2:
        raise InputError("statistics need a tensor of at least 2 images [M,C,H,W]")
    get_layer(model, layer)
    device = next(model.parameters(), torch.empty(0)).device
    images = images.to(device)
    count, mean, m2 = 0, None, None

    def layer_output(start: int, stop: int) -> torch.Tensor:
        nonlocal count, mean, m2
        with torch.no_grad(), capture_outputs(model, [layer]) as store:
            model(images[start:stop])
        out = store[layer].double()
        b = out.shape[0]
        b_mean = out.mean(0)
        b_m2 = ((out - b_mean) ** 2).sum(0)
        if mean is None:
            count, mean, m2 = b, b_mean, b_m2
        else:
            delta = b_mean - mean
            total = count + b
            mean = mean + delta * (b / total)
            m2 = m2 + b_m2 + delta**2 * (count * b / total)
            count = total
        return out.new_zeros(b, 0)

    with frozen(model):
        size = chunk_size(model, images, backward=False, batch_size=batch_size)
        run_chunked(layer_output, len(images), size, desc="layer statistics")
    std = (m2 / (count - 1)).sqrt().clamp_min(min_std)
    stats = LayerStatistics(layer, mean.float(), std.float(), count)
    if path is not None:
        stats.save(path)
    return stats


def gaussian_smoothing(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-channel spatial Gaussian (kernel ``2 round(3 sigma) + 1``, reflect padding), as IBA."""
    if sigma <= 0:
        return x
    radius = max(1, round(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k1 = torch.exp(-0.5 * (t / sigma) ** 2)
    k1 = k1 / k1.sum()
    c = x.shape[1]
    kernel = (k1[:, None] * k1[None, :]).expand(c, 1, -1, -1)
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if pad < radius:
        x = F.pad(x, (radius - pad,) * 4, mode="replicate")
    x = F.pad(x, (pad,) * 4, mode="reflect")
    return F.conv2d(x, kernel, groups=c)


def capacity(
    lam: torch.Tensor, r: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """KL( N(lambda r_n, (1-lambda)^2) || N(0, 1) ) per element, nats (``r_n = (R - mu)/sigma``)."""
    r_norm = (r - mean) / std
    var_z = (1 - lam) ** 2
    return -0.5 * (1 + torch.log(var_z.clamp_min(1e-12)) - (lam * r_norm) ** 2 - var_z)


def _statistics(spec: object, model: nn.Module, layer: str, inputs: torch.Tensor, batch_size):
    if spec is None:
        if len(inputs) < 2:
            raise InputError(
                "iba estimates the layer statistics on the inputs when none are given, and one "
                "image is not enough: pass statistics= (images, a LayerStatistics or a saved file)"
            )
        return estimate_statistics(model, layer, inputs, batch_size=batch_size)
    if isinstance(spec, LayerStatistics):
        stats = spec
    elif isinstance(spec, str | os.PathLike):
        stats = LayerStatistics.load(spec)
    elif isinstance(spec, torch.Tensor):
        return estimate_statistics(model, layer, spec, batch_size=batch_size)
    else:
        raise InputError(
            "statistics must be a LayerStatistics, a path to a saved one, a tensor of "
            f"images, or None (estimate on the inputs), got {type(spec).__name__}"
        )
    if stats.layer != layer:
        raise InputError(f"statistics are for layer {stats.layer!r}, not {layer!r}")
    return stats


TRAINING_IMAGES = 512  # images IBA's layer statistics are estimated on by default


def training_statistics(
    model: nn.Module,
    train,
    layer: str = "auto",
    *,
    folder: str | Path | None = None,
    images: int | None = None,
) -> tuple[LayerStatistics, Path | None]:
    """IBA's layer statistics from the first ``images`` (512) images of ``train``.

    ``layer="auto"`` is resolved first. With ``folder`` they are saved once as
    ``folder/iba-statistics-<layer>.safetensors`` and an existing file for the
    same layer is reused (``estimate_statistics``). Returns ``(statistics, path)``
    (``path`` None without ``folder``); a path can go into a JSON settings file.
    """
    from ..data import as_dataset

    train = as_dataset(train)
    count = min(images or TRAINING_IMAGES, len(train))
    x, _ = train.tensors(range(count))
    x = x.to(model_device(model))
    if layer == "auto":
        layer = auto_layer(model, x[:1])
    path = None if folder is None else Path(folder) / f"iba-statistics-{layer}.safetensors"
    return estimate_statistics(model, layer, x, path=path), path


@register
class InformationBottleneck(Method):
    """IBA: ``layer`` ("auto"), ``beta`` (10), ``steps`` (10), ``lr`` (1), ``samples``
    (noise copies per step, 10), ``sigma`` (smoothing of lambda, 1), ``statistics``
    (:class:`LayerStatistics`, a saved file, images to estimate them on, or None =
    estimated on the explained inputs), ``seed``, ``batch_size``.

    ``extras``: ``capacity`` ``[N,C,h,w]`` (nats) and ``lambda`` ``[N,C,h,w]``.
    """

    hyperparameters = {
        "layer": AUTO_LAYER,
        "beta": Param("float", 10.0, min=0),
        "steps": Param("int", 10, min=1),
        "lr": Param("float", 1.0, min=0, open_min=True),
        "samples": Param("int", 10, min=1),
        "sigma": Param("float", 1.0, min=0),
        "statistics": Param("any", None, none=True, help="LayerStatistics, a file or images"),
        "seed": SEED,
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }
    name = "iba"
    description = "information bottleneck: bits per location the class needs at a layer"
    pixel_space = False
    family = "Bottleneck"
    needs = "layer statistics from training images"

    @classmethod
    def passes(cls, params):
        return params["steps"] * params["samples"] + 1.0

    @classmethod
    def prepare(cls, setup, params):
        """The layer statistics of :func:`training_statistics` on ``setup``'s training
        images (saved in ``setup.folder`` when given: ``statistics`` is then the path)."""
        if params.get("statistics") is not None:
            return {}
        if setup.train is None:
            raise InputError(
                "iba needs statistics=<file> (layer statistics of training images, e.g. "
                "cnnlens evaluate's iba-statistics-*.safetensors) when no training data is given"
            )
        stats, path = training_statistics(
            setup.model,
            setup.train(),
            str(params.get("layer", "auto")),
            folder=setup.folder,
            images=setup.images,
        )
        return {"statistics": stats if path is None else str(path)}

    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor, logits: torch.Tensor
    ) -> Explanation:
        p = self.params
        layer = p.get("layer", "auto")
        if layer == "auto":
            layer = auto_layer(self.model, inputs)
        get_layer(self.model, layer)
        beta = positive_float("beta", p.get("beta", 10.0), allow_zero=True)
        steps = positive_int("steps", p.get("steps", 10))
        lr = positive_float("lr", p.get("lr", 1.0))
        samples = positive_int("samples", p.get("samples", 10))
        sigma = positive_float("sigma", p.get("sigma", 1.0), allow_zero=True)
        stats = _statistics(p.get("statistics"), self.model, layer, inputs, p.get("batch_size"))
        seed = p.get("seed", 0)
        generator(inputs.device, seed)  # checked before any work
        with torch.no_grad(), capture_outputs(self.model, [layer]) as store:
            self.model(inputs)
        features = store[layer]
        if features.dim() != 4 or tuple(features.shape[1:]) != tuple(stats.mean.shape):
            raise InputError(
                f"layer {layer!r} gives {tuple(features.shape[1:])}, statistics are for "
                f"{tuple(stats.mean.shape)}; IBA needs a [C,H,W] feature map"
            )
        mean, std = stats.mean.to(inputs.device), stats.std.to(inputs.device)
        after_relu = bool((features >= 0).all())
        n, _c, h, w = inputs.shape

        def optimise(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            b = stop - start
            r = features[start:stop]
            x = inputs[start:stop].repeat_interleave(samples, 0)
            t = target[start:stop].repeat_interleave(samples, 0)
            alpha = torch.full_like(r, 5.0).requires_grad_(True)
            opt = torch.optim.Adam([alpha], lr=lr)
            state: dict[str, torch.Tensor] = {}
            # each chunk restarts the seeded sequence; the noise of each step and sample is
            # the same for every image, so an image's map does not depend on its batch
            g = generator(inputs.device, seed)

            def bottleneck(out: torch.Tensor) -> torch.Tensor:
                lam = state["lam"].repeat_interleave(samples, 0)
                noise = torch.randn((samples, *out.shape[1:]), generator=g, device=out.device)
                eps = noise.repeat(b, 1, 1, 1) * std + mean
                z = lam * out + (1 - lam) * eps
                return z.clamp_min(0) if after_relu else z

            cap = r
            with replace_output(self.model, layer, bottleneck):
                for _ in range(steps):
                    lam = gaussian_smoothing(torch.sigmoid(alpha), sigma)
                    state["lam"] = lam
                    cap = capacity(lam, r, mean, std)
                    ce = F.cross_entropy(self.model(x), t, reduction="none").view(b, samples)
                    loss = ce.mean(1) + beta * cap.flatten(1).mean(1)
                    opt.zero_grad()
                    loss.sum().backward()
                    opt.step()
            return cap.detach(), lam.detach()

        chunk = self.chunk(inputs, backward=True)
        with torch.enable_grad():
            caps, lams = run_chunked(optimise, n, max(1, chunk // samples), desc="iba")
        bits = caps.sum(1, keepdim=True) / math.log(2)
        maps = F.interpolate(bits, size=(h, w), mode="bilinear", align_corners=False)
        scale = bits.flatten(1).sum(1) / maps.flatten(1).sum(1).clamp_min(1e-12)
        maps = maps * scale[:, None, None, None]
        return self.explanation(maps, target, capacity=caps, **{"lambda": lams})

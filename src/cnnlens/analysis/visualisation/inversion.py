"""Feature inversion and multifaceted feature visualisation (the survey, paper 001, 3.4).

- :func:`invert` (Mahendran & Vedaldi 2015, "Understanding Deep Image Representations by
  Inverting Them", Eq. 1-3): the image whose representation at ``layer`` matches a given
  image's, by minimising ``||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 + a * mean|x|^alpha +
  b * TV(x)`` (the alpha-norm on the normalised image, TV of :mod:`.image_params`).
- :func:`facets` (Nguyen, Yosinski & Clune 2016, "Multifaceted Feature Visualization"):
  a class's top-activating training images are clustered by k-means in ``layer``'s
  feature space (channels averaged over positions); activation maximisation of the class
  logit starts from each cluster's mean image, one facet per cluster.

Both optimise a pixel image in [0, 1] (a sigmoid, :class:`~.image_params.PixelImage`)
with Adam under :func:`~cnnlens.hooks.frozen`, so the model is as before afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...chunking import run_chunked
from ...data.adapt import as_dataset
from ...errors import InputError
from ...hooks import capture_outputs, frozen
from ...layers import get_layer
from ...params import Param, check_params
from ...placement import placement
from ..running import run_model
from .image_params import PixelImage, total_variation

PARAMS = {
    "steps": Param("int", 200, min=1, help="Adam steps"),
    "lr": Param("float", 0.1, min=0, open_min=True, help="Adam's learning rate"),
    "alpha": Param("float", 6.0, min=1, help="exponent of the alpha-norm"),
    "alpha_weight": Param("float", 0.0, min=0, help="weight of the alpha-norm"),
    "tv": Param("float", 0.0, min=0, help="weight of the total variation"),
    "seed": Param("int", 0, help="seed of the random start"),
}


def _normaliser(data_mean, data_std, channels: int, device):
    mean = torch.tensor(list(data_mean or [0.0] * channels), device=device).view(1, -1, 1, 1)
    std = torch.tensor(list(data_std or [1.0] * channels), device=device).view(1, -1, 1, 1)
    return mean, std


def _descend(
    model: nn.Module,
    loss_of: Callable[[torch.Tensor, dict], torch.Tensor],  # (logits, layer outputs)
    start: torch.Tensor,
    layers: Sequence[str],
    *,
    steps: int,
    lr: float,
    alpha: float,
    alpha_weight: float,
    tv: float,
    seed: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    from_pixels: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``loss_of(logits, layer outputs) + regularisers`` over a pixel
    image; ``start``: pixels in [0, 1] to begin from (``from_pixels``) or only the shape.
    Returns the pixels ``[N,C,H,W]`` and the per-image loss term at each step."""
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(start))]
    image = PixelImage(start.shape[1:], generators, device=start.device)
    if from_pixels:
        with torch.no_grad():
            image.z.copy_(torch.logit(start.clamp(0.02, 0.98)))
    adam = torch.optim.Adam(image.params, lr=lr)
    history = []
    with frozen(model), capture_outputs(model, layers) as store:
        for _ in range(steps):
            x = (image.pixels() - mean) / std
            term = loss_of(run_model(model, x), store)
            loss = term
            if alpha_weight:
                loss = loss + alpha_weight * x.abs().pow(alpha).flatten(1).mean(1)
            if tv:
                loss = loss + tv * total_variation(image.pixels())
            adam.zero_grad()
            loss.sum().backward()
            adam.step()
            history.append(term.detach())
    return image.pixels().detach(), torch.stack(history)


@dataclass
class Inversion:
    """``pixels`` ``[N,C,H,W]`` in [0, 1] reconstructed from ``layer``; ``history``
    ``[steps, N]``: the normalised representation error at each step; ``error`` ``[N]``:
    the normalised error of the final images."""

    layer: str
    pixels: torch.Tensor
    history: torch.Tensor
    error: torch.Tensor
    parameters: dict


def invert(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **options,
) -> Inversion:
    """Reconstruct ``images`` (normalised for the model, ``[N,C,H,W]``) from their
    representation at ``layer`` (Mahendran & Vedaldi 2015); ``mean``/``std``: the model's
    normalisation (default: the model reads [0, 1] images). ``options``: :data:`PARAMS`."""
    settings = {name: p.default for name, p in PARAMS.items()}
    settings.update(check_params("invert", options, PARAMS))
    get_layer(model, layer)
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise InputError(
            f"images must be a [N,C,H,W] tensor, got {getattr(images, 'shape', images)}"
        )
    device, dtype = placement(model)
    images = images.to(device=device, dtype=dtype)
    norm_mean, norm_std = _normaliser(mean, std, images.shape[1], device)
    with frozen(model), torch.no_grad(), capture_outputs(model, [layer]) as store:
        run_model(model, images)
        target = store[layer].detach().flatten(1)
    scale = target.pow(2).sum(1).clamp_min(1e-12)

    def error(_logits, outputs) -> torch.Tensor:
        return (outputs[layer].flatten(1) - target).pow(2).sum(1) / scale

    pixels, history = _descend(
        model, error, images, [layer], mean=norm_mean, std=norm_std, from_pixels=False,
        **settings,
    )  # fmt: skip
    with frozen(model), torch.no_grad(), capture_outputs(model, [layer]) as store:
        run_model(model, (pixels - norm_mean) / norm_std)
        final = error(None, store)
    return Inversion(layer, pixels, history, final, settings)


@dataclass
class Facets:
    """``pixels`` ``[K,C,H,W]``: one visualisation per cluster; ``starts``: the clusters'
    mean images; ``labels``: the cluster of each top image (indices ``top`` of the data);
    ``logits`` ``[K, classes]`` on the facets."""

    target: int
    layer: str
    pixels: torch.Tensor
    starts: torch.Tensor
    top: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor


def facets(
    model: nn.Module,
    data,
    target: int,
    layer: str,
    k: int,
    *,
    top: int = 100,
    **options,
) -> Facets:
    """``k`` facets of class ``target`` (Nguyen et al. 2016): k-means (scikit-learn,
    ``random_state=seed``) of the ``top`` images of ``data`` with the largest ``target``
    logit, in ``layer``'s channel-averaged features; maximisation of the logit from each
    cluster's mean image. ``options``: :data:`PARAMS`."""
    from sklearn.cluster import KMeans

    settings = {name: p.default for name, p in PARAMS.items()}
    settings.update(check_params("facets", options, PARAMS))
    data = as_dataset(data)
    get_layer(model, layer)
    for name, value, low in (("k", k, 1), ("top", top, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(target, int) or not 0 <= target < data.num_classes:
        raise InputError(f"target must be a class index in [0, {data.num_classes}), got {target!r}")
    device, dtype = placement(model)

    def part(a: int, b: int):
        x, _ = data.tensors(range(a, b))
        with capture_outputs(model, [layer]) as store:
            logits = run_model(model, x.to(device=device, dtype=dtype))
        out = store[layer]
        pooled = out.flatten(2).mean(2) if out.dim() > 2 else out
        return logits[:, target].float().cpu(), pooled.float().cpu()

    with frozen(model), torch.no_grad():
        scores, pooled = run_chunked(part, len(data), 256)
    chosen = torch.sort(scores, descending=True, stable=True).indices[: min(top, len(data))]
    if len(chosen) < k:
        raise InputError(f"k={k} facets need at least {k} images; the data has {len(chosen)}")
    km = KMeans(n_clusters=k, n_init=10, random_state=settings["seed"])
    labels = torch.as_tensor(km.fit_predict(pooled[chosen].double().numpy()))
    raw = data.raw_batch(chosen)
    starts = torch.stack([raw[labels == c].mean(0) for c in range(k)]).to(
        device=device, dtype=dtype
    )
    norm_mean, norm_std = _normaliser(data.mean, data.std, starts.shape[1], device)

    def negative_logit(logits, _outputs) -> torch.Tensor:
        return -logits[:, target]

    pixels, _history = _descend(
        model, negative_logit, starts, [], mean=norm_mean, std=norm_std, from_pixels=True,
        **settings,
    )  # fmt: skip
    with frozen(model), torch.no_grad():
        logits = run_model(model, (pixels - norm_mean) / norm_std).float().cpu()
    return Facets(target, layer, pixels, starts, chosen, labels, logits)

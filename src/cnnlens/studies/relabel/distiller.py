"""Re-label distillation end to end (paper 004, Fig. 2): synthesise, re-label, distil.

For a batch of inputs: one encoder pass; per input ``n`` perturbed latents
(:mod:`~cnnlens.studies.relabel.synthesis`; the same ``n`` directions ``eps`` for every
input, drawn from the seed alone, so an input's map does not depend on its batch),
decoded in one chunked pass; labels from one chunked pass of the network
(:mod:`~cnnlens.studies.relabel.labels`, with the scale search); one batched linear
student per input (:mod:`~cnnlens.studies.relabel.student`), optionally on images
average-pooled by ``downsample`` (the paper's "low-dimensional space"); saliency
``w_1 - w_0`` reshaped to ``[C, h, w]`` and upsampled (bilinear) to the input
size. Inputs are processed in groups small enough that their synthetic images fit
the memory budget of :func:`cnnlens.chunking.memory_budget`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...chunking import memory_budget, run_chunked
from ...errors import InputError
from ...hooks import frozen
from .labels import search_scale, teacher_labels
from .student import LOSSES, check_lambdas, fit_students
from .synthesis import (
    ANCHORS,
    anchor_offset,
    check_vae,
    decode_perturbed,
    encode,
    latent_noise,
)


@dataclass
class Distilled:
    """Per input: the saliency ``raw`` ``[N, C, H, W]`` (``w_1 - w_0``, upsampled), the
    student's bias ``[N]``, the final latent ``scale``, the ``share`` of ``y' = 1``,
    the scales tried, the student's ``fidelity`` to ``y'`` (all ``[N]``)."""

    raw: torch.Tensor
    bias: torch.Tensor
    scale: torch.Tensor
    share: torch.Tensor
    tries: torch.Tensor
    fidelity: torch.Tensor


@dataclass
class Settings:
    """The hyperparameters of :func:`distill`, checked (see the method's docstring)."""

    n: int = 1000
    anchor: str = "reconstruction"
    scale: float = 1.0
    band: tuple[float, float] = (0.1, 0.9)
    max_tries: int = 8
    probe: int = 100
    loss: str = "relabel"
    lambda1: float = 0.7
    lambda2: float = 0.3
    weight_decay: float = 1e-3
    steps: int = 100
    lr: float = 1.0
    downsample: int = 2
    seed: int = 0
    batch_size: int | None = None
    memory: int | float | str | None = None  # budget of the chunks (cnnlens.chunking)

    def __post_init__(self) -> None:
        for name in ("n", "max_tries", "probe", "steps", "downsample"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        for name in ("scale", "lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < float("inf"):
                raise InputError(f"{name} must be a finite number > 0, got {v!r}")
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, int | float) or not 0 <= wd < float("inf"):
            raise InputError(f"weight_decay must be a finite number >= 0, got {wd!r}")
        band = self.band
        if (
            not isinstance(band, tuple | list)
            or len(band) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in band)
            or not 0 <= band[0] < band[1] <= 1
        ):
            raise InputError(f"band must be (low, high) with 0 <= low < high <= 1, got {band!r}")
        self.band = (float(band[0]), float(band[1]))
        if self.anchor not in ANCHORS:
            raise InputError(f"anchor must be one of {ANCHORS}, got {self.anchor!r}")
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        self.lambda1, self.lambda2 = check_lambdas(self.lambda1, self.lambda2)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"seed must be an integer, got {self.seed!r}")


def group_size(settings: Settings, inputs: torch.Tensor) -> int:
    """Inputs per group: their synthetic images (and the student's copy) fit the budget."""
    per_input = settings.n * inputs[0].numel() * inputs.element_size() * 3
    return max(
        1, min(len(inputs), memory_budget(inputs.device, settings.memory) // max(per_input, 1))
    )


def distill(
    model: nn.Module,
    vae: object,
    inputs: torch.Tensor,
    target: torch.Tensor,
    settings: Settings | None = None,
) -> Distilled:
    """Re-label distillation of ``model`` for ``inputs`` ``[N, C, H, W]`` and classes
    ``target`` ``[N]``; the model and the VAE are left as they were."""
    settings = settings or Settings()
    vae = check_vae(vae, inputs, model)
    size = group_size(settings, inputs)
    parts = []
    with frozen(model), frozen(vae):
        for start in range(0, len(inputs), size):
            generator = torch.Generator(device=inputs.device).manual_seed(settings.seed)
            parts.append(
                _distill_group(
                    model,
                    vae,
                    inputs[start : start + size],
                    target[start : start + size],
                    settings,
                    generator,
                )
            )
    return Distilled(
        *(torch.cat(field) for field in zip(*(_fields(p) for p in parts), strict=True))
    )


def _fields(d: Distilled) -> tuple[torch.Tensor, ...]:
    return (d.raw, d.bias, d.scale, d.share, d.tries, d.fidelity)


def _distill_group(
    model: nn.Module,
    vae: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    st: Settings,
    generator: torch.Generator,
) -> Distilled:
    n = st.n
    mu, sigma = encode(vae, x)
    # the same latent directions for every input: its map does not depend on its batch
    eps = latent_noise(1, n, mu.shape[1], generator, x.device).expand(len(x), -1, -1)
    offset = anchor_offset(vae, x, mu, st.anchor)

    def generate(images: torch.Tensor, scales: torch.Tensor, m: int) -> torch.Tensor:
        return decode_perturbed(
            vae, mu[images], sigma[images], eps[images, :m], scales,
            offset=None if offset is None else offset[images], batch_size=st.batch_size,
            memory=st.memory,
        )  # fmt: skip

    def label(synthetic: torch.Tensor, images: torch.Tensor, m: int):
        return teacher_labels(
            model, synthetic, target[images], m, batch_size=st.batch_size, memory=st.memory
        )

    found = search_scale(
        generate, label, len(x), n, scale=st.scale, band=st.band, max_tries=st.max_tries,
        probe=st.probe, device=x.device,
    )  # fmt: skip
    synthetic = found.synthetic  # [K, n, C, H, W]
    c, h, w = x.shape[1:]
    if st.downsample > 1:
        small = (max(1, h // st.downsample), max(1, w // st.downsample))
        flat = F.adaptive_avg_pool2d(synthetic.view(-1, c, h, w), small)
    else:
        small, flat = (h, w), synthetic.view(-1, c, h, w)
    features = flat.reshape(len(x), n, -1)
    del synthetic, found.synthetic
    students = fit_students(
        features, found.soft, found.hard, loss=st.loss, lambda1=st.lambda1,
        lambda2=st.lambda2, weight_decay=st.weight_decay, steps=st.steps, lr=st.lr,
    )  # fmt: skip
    raw = students.u.view(len(x), c, *small)
    if small != (h, w):
        raw = F.interpolate(raw, size=(h, w), mode="bilinear", align_corners=False)
    return Distilled(
        raw, students.a, found.scale, found.share, found.tries.float(), students.fidelity
    )


def synthetic_set(
    model: nn.Module,
    vae: object,
    image: torch.Tensor,
    *,
    target: int | None = None,
    n: int = 1000,
    seed: int = 0,
    **settings,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The ``n`` relabelled synthetic images of one image ``[1, C, H, W]`` (after the
    scale search), their labels ``y'`` ``[n]`` and the scale: for plots such as the
    paper's t-SNE of the teacher's features (Fig. 3)."""
    st = Settings(n=n, seed=seed, **settings)
    vae = check_vae(vae, image, model)
    with frozen(model), frozen(vae):
        with torch.no_grad():
            c = model(image).argmax(1) if target is None else torch.tensor([target])
        generator = torch.Generator(device=image.device).manual_seed(st.seed)
        mu, sigma = encode(vae, image)
        eps = latent_noise(1, n, mu.shape[1], generator, image.device)
        offset = anchor_offset(vae, image, mu, st.anchor)

        def generate(images, scales, m):
            shift = None if offset is None else offset[images]
            return decode_perturbed(
                vae, mu[images], sigma[images], eps[images, :m], scales, offset=shift
            )

        def label(synthetic, images, m):
            return teacher_labels(model, synthetic, c.to(image.device)[images], m)

        found = search_scale(
            generate, label, 1, n, scale=st.scale, band=st.band, max_tries=st.max_tries,
            probe=st.probe, device=image.device,
        )  # fmt: skip
    return found.synthetic[0], found.hard[0], float(found.scale[0])


def relabelled_embedding(
    model: nn.Module,
    vae: object,
    image: torch.Tensor,
    *,
    target: int | None = None,
    n: int = 300,
    seed: int = 0,
    perplexity: float = 30.0,
    **settings,
) -> tuple[np.ndarray, torch.Tensor, float]:
    """Paper 004's Fig. 3: the ``n`` relabelled synthetic images of one image, embedded
    in 2-D by t-SNE (scikit-learn, PCA init, ``random_state=seed``) of the network's
    penultimate features. Returns ``xy`` ``[n, 2]``, the labels ``y'`` ``[n]`` and the
    scale. ``n`` bounds the cost (t-SNE is quadratic in it); the perplexity is capped at
    ``(n - 1) / 3`` as t-SNE requires."""
    from sklearn.manifold import TSNE

    from ...layers import penultimate_features

    if isinstance(n, bool) or not isinstance(n, int) or not 4 <= n <= 5000:
        raise InputError(f"n must be an integer in [4, 5000] for the t-SNE, got {n!r}")
    synthetic, hard, scale = synthetic_set(
        model, vae, image, target=target, n=n, seed=seed, **settings
    )
    with frozen(model), torch.no_grad():
        feats = run_chunked(lambda a, b: penultimate_features(model, synthetic[a:b]).cpu(), n, 250)
    tsne = TSNE(
        n_components=2, init="pca", random_state=seed, perplexity=min(perplexity, (n - 1) / 3)
    )
    return tsne.fit_transform(feats.double().numpy()), hard.cpu(), scale

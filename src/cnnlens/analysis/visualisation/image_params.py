"""Image parameterisations and transforms for activation maximisation.

An optimised image is ``sigmoid(M z)`` in [0, 1]: ``z`` is the "raw" image the
parameters describe and ``M`` an optional colour decorrelation (Olah et al.
2017, "Feature Visualization", Distill; Lucid's ``to_valid_rgb``). Two ways to
describe ``z``:

* :class:`PixelImage`: ``z`` is the parameter itself (Simonyan et al. 2013; Erhan
  et al. 2009);
* :class:`FourierImage`: ``z = irfft2(s * c) / 4`` (orthonormal inverse real FFT)
  of learned spectrum coefficients ``c`` scaled by ``s = 1 / max(f, 1 / max(H, W))``,
  ``f`` the frequency in cycles per pixel: every frequency then moves about
  equally fast under gradient steps, which damps the high-frequency patterns
  pixel optimisation produces (Lucid's ``fft_image`` with decay power 1).

Both start from ``N(0, 0.01)`` draws (a grey image) made with one generator per
image, so an image depends on its seed only, not on what else is in the batch.
Transforms applied at every step (Mahendran & Vedaldi 2016; Yosinski et al. 2015;
Olah et al. 2017): a random translation (:func:`jitter`), a random scale
(:func:`random_scale`), Gaussian blur of ``z`` (:meth:`blur_`, Yosinski et al.'s
periodic blur, as a product in the frequency domain) and total variation
(:func:`total_variation`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ...errors import InputError

INIT_SD = 0.01  # Lucid's initial standard deviation of pixels and spectrum coefficients
FOURIER_MAGIC = 4.0  # Lucid divides the Fourier image by 4 so its initial contrast is small

# Lucid's colour correlation of ImageNet (square root of the colour covariance by SVD)
IMAGENET_COLOUR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


def colour_decorrelation(images: torch.Tensor) -> torch.Tensor:
    """``[C, C]`` square root of the colour covariance of ``images`` (``[N, C, H, W]`` in
    [0, 1]): ``U sqrt(S)`` from the SVD of the covariance, its columns scaled so the
    longest has norm 1 (as Lucid normalises its ImageNet matrix). Used as ``M`` above,
    optimisation steps in ``z`` move along the data's decorrelated colour axes."""
    if images.dim() != 4:
        raise InputError(f"images must be [N,C,H,W] in [0, 1], got shape {tuple(images.shape)}")
    pixels = images.detach().double().transpose(0, 1).flatten(1)  # [C, N*H*W]
    cov = torch.atleast_2d(torch.cov(pixels))
    u, s, _ = torch.linalg.svd(cov)
    root = u * s.clamp_min(0).sqrt()
    return (root / root.norm(dim=0).max().clamp_min(1e-12)).float()


def decorrelation_matrix(decorrelate, channels: int) -> torch.Tensor | None:
    """``decorrelate`` (None / False, True for Lucid's ImageNet matrix, or a ``[C, C]``
    matrix) checked against the number of channels."""
    if decorrelate is None or decorrelate is False:
        return None
    if decorrelate is True:
        if channels != 3:
            raise InputError(
                f"decorrelate=True uses ImageNet's RGB colour matrix; images have {channels} "
                "channels: pass a [C, C] matrix (colour_decorrelation(images)) instead"
            )
        root = torch.tensor(IMAGENET_COLOUR_SQRT)
        return root / root.norm(dim=0).max()
    matrix = torch.as_tensor(decorrelate, dtype=torch.float32)
    if matrix.shape != (channels, channels) or not torch.isfinite(matrix).all():
        raise InputError(
            f"decorrelate must be a finite [{channels}, {channels}] matrix, got shape "
            f"{tuple(matrix.shape)}"
        )
    return matrix


def _gaussian_transfer(h: int, w: int, sigma: float, device) -> torch.Tensor:
    """``[H, W//2+1]`` frequency response of a Gaussian blur of ``sigma`` px (circular)."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    return torch.exp(-2 * math.pi**2 * sigma**2 * (fx * fx + fy * fy))


def _draw(shape: Sequence[int], generators: Sequence[torch.Generator], device) -> torch.Tensor:
    """One ``N(0, INIT_SD)`` draw of ``shape`` per generator, stacked on dim 0."""
    draws = [torch.randn(*shape, generator=g) * INIT_SD for g in generators]
    return torch.stack(draws).to(device)


class ImageParam:
    """``len(generators)`` images ``[S, C, H, W]`` in [0, 1] from leaf tensors ``params``."""

    name = ""

    def __init__(
        self,
        shape: Sequence[int],
        generators: Sequence[torch.Generator],
        *,
        device: torch.device | str = "cpu",
        decorrelate: torch.Tensor | None = None,
    ) -> None:
        self.shape = tuple(int(v) for v in shape)
        self.device = torch.device(device)
        self.matrix = None if decorrelate is None else decorrelate.to(self.device)
        self.params: list[torch.Tensor] = []

    def raw(self) -> torch.Tensor:
        """``z`` ``[S, C, H, W]``, the image before colour mixing and the sigmoid."""
        raise NotImplementedError

    def blur_(self, sigma: float) -> None:
        """Blur ``z`` in place by a (circular) Gaussian of ``sigma`` pixels."""
        raise NotImplementedError

    def pixels(self) -> torch.Tensor:
        """The images in [0, 1], ``[S, C, H, W]`` (differentiable in ``params``)."""
        z = self.raw()
        if self.matrix is not None:
            z = torch.einsum("dc,schw->sdhw", self.matrix, z)
        return torch.sigmoid(z)


class PixelImage(ImageParam):
    """Every pixel of ``z`` is a parameter."""

    name = "pixel"

    def __init__(self, shape, generators, **kwargs) -> None:
        super().__init__(shape, generators, **kwargs)
        self.z = _draw(self.shape, generators, self.device).requires_grad_(True)
        self.params = [self.z]

    def raw(self) -> torch.Tensor:
        return self.z

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        h, w = self.shape[-2:]
        spectrum = torch.fft.rfft2(self.z) * _gaussian_transfer(h, w, sigma, self.device)
        self.z.copy_(torch.fft.irfft2(spectrum, s=(h, w)))


class FourierImage(ImageParam):
    """``z`` is the inverse real FFT of learned coefficients scaled by 1 / frequency."""

    name = "fourier"

    def __init__(self, shape, generators, **kwargs) -> None:
        super().__init__(shape, generators, **kwargs)
        c, h, w = self.shape
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        frequency = (fx * fx + fy * fy).sqrt()
        self.scale = (1.0 / frequency.clamp_min(1.0 / max(h, w))).to(self.device)[..., None]
        spectrum = (c, h, w // 2 + 1, 2)  # real and imaginary parts
        self.coefficients = _draw(spectrum, generators, self.device).requires_grad_(True)
        self.params = [self.coefficients]

    def raw(self) -> torch.Tensor:
        h, w = self.shape[-2:]
        spectrum = torch.view_as_complex(self.coefficients * self.scale)
        return torch.fft.irfft2(spectrum, s=(h, w), norm="ortho") / FOURIER_MAGIC

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        h, w = self.shape[-2:]
        self.coefficients.mul_(_gaussian_transfer(h, w, sigma, self.device)[..., None])


PARAMETERISATIONS = {cls.name: cls for cls in (PixelImage, FourierImage)}


def image_param(
    name: str,
    shape: Sequence[int],
    generators: Sequence[torch.Generator],
    *,
    device: torch.device | str = "cpu",
    decorrelate: torch.Tensor | None = None,
) -> ImageParam:
    """The parameterisation called ``name`` (``"pixel"`` or ``"fourier"``)."""
    if name not in PARAMETERISATIONS:
        raise InputError(
            f"parameterisation must be one of {', '.join(PARAMETERISATIONS)}, got {name!r}"
        )
    return PARAMETERISATIONS[name](shape, generators, device=device, decorrelate=decorrelate)


def jitter(images: torch.Tensor, shifts: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Image ``i`` translated by ``shifts[i] = (dy, dx)`` pixels, wrapping around (as
    ``torch.roll``), all images in one indexing op."""
    if not any(dy or dx for dy, dx in shifts):
        return images
    n, c, h, w = images.shape
    dy, dx = torch.tensor(shifts, device=images.device).t()[..., None]
    rows = (torch.arange(h, device=images.device) - dy) % h  # [N, H]
    cols = (torch.arange(w, device=images.device) - dx) % w  # [N, W]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return images[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def random_scale(images: torch.Tensor, factors: Sequence[float]) -> torch.Tensor:
    """Image ``i`` zoomed by ``factors[i]`` about its centre (bilinear, borders reflected)."""
    zoom = torch.as_tensor(factors, dtype=images.dtype, device=images.device)
    theta = torch.zeros(len(images), 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="reflection", align_corners=False)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels per image ``[S]``: Mahendran &
    Vedaldi's (2015, Eq. 8) total variation with beta = 2, averaged instead of summed
    so a weight means the same at any image size."""
    dy = (images[..., 1:, :] - images[..., :-1, :]).pow(2).flatten(1).mean(1)
    dx = (images[..., :, 1:] - images[..., :, :-1]).pow(2).flatten(1).mean(1)
    return dy + dx

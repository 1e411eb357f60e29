"""A convolutional variational autoencoder (Kingma & Welling 2014), the image
generator of re-label distillation (paper 004, section 2.2, Eqs. 3-5).

Encoder: stride-2 4x4 convolutions (``width`` = 16, 2x, 4x, ... channels, at
most 256; :func:`cnnlens.studies.relabel.train_vae` uses 32), each followed by its own
ReLU, halving the image until it is at most 4 pixels (or odd) on a side, then
one linear layer to the mean and log-variance of a diagonal Gaussian over
``latent`` dimensions. Decoder: the mirror image (linear, then stride-2 4x4
transposed convolutions) ending in a linear output: the VAE reads and writes
images *normalised as the classifier sees them*, so its samples go to the
classifier as they are.

Default latent sizes (:data:`DEFAULT_LATENT`): 64 for 32x32 images and 128
for 64x64 (the paper used 500 at 224x224x3; a 32x32x3 image has 49x fewer
pixels, and 64 dimensions reconstruct ``shapes`` and ``digits`` well while
training in about a minute on 2 CPU cores). Other sizes scale 64 by side/32.

``encode(x) -> (mu, logvar)``, ``decode(z) -> x'`` and ``forward(x)`` =
``decode(mu)`` (the deterministic reconstruction). The network is not a
classifier: it has no ``head``; ``num_classes`` is accepted (and ignored) only
so :func:`cnnlens.nets.create` and :mod:`cnnlens.checkpoint` build it like the
other nets.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from ...nets import register
from ...train import Objective

DEFAULT_LATENT = {32: 64, 64: 128}
MAX_CHANNELS = 256


def default_latent(image_size: int) -> int:
    """The documented default latent size for square images of side ``image_size``."""
    return DEFAULT_LATENT.get(image_size, max(8, int(round(64 * image_size / 32))))


def _stages(side: int) -> int:
    """Halvings of ``side`` until it is <= 4 or odd."""
    count = 0
    while side > 4 and side % 2 == 0:
        side //= 2
        count += 1
    return count


class ConvVAE(nn.Module):
    """Convolutional VAE over normalised ``[N, in_channels, H, W]`` images."""

    def __init__(
        self,
        *,
        in_channels: int = 3,
        image_size: int | tuple[int, int] = 32,
        latent: int | None = None,
        width: int = 16,
    ) -> None:
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if min(h, w) < 8:
            raise ConfigError(f"ConvVAE needs images of at least 8x8, got {h}x{w}")
        stages = min(_stages(h), _stages(w))
        if stages < 1:
            raise ConfigError(f"ConvVAE needs an even image side to downsample, got {h}x{w}")
        if h % (2**stages) or w % (2**stages):
            raise ConfigError(f"ConvVAE cannot halve {h}x{w} {stages} times")
        latent = default_latent(max(h, w)) if latent is None else latent
        if isinstance(latent, bool) or not isinstance(latent, int) or latent < 1:
            raise ConfigError(f"latent must be a positive integer, got {latent!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ConfigError(f"width must be a positive integer, got {width!r}")
        self.image_shape = (in_channels, h, w)
        self.latent = latent
        channels = [in_channels] + [min(width * 2**k, MAX_CHANNELS) for k in range(stages)]
        self.bottom = (channels[-1], h // 2**stages, w // 2**stages)
        flat = channels[-1] * self.bottom[1] * self.bottom[2]
        enc: list[nn.Module] = []
        for cin, cout in zip(channels[:-1], channels[1:], strict=True):
            enc += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU()]
        self.encoder = nn.Sequential(*enc)
        self.to_stats = nn.Linear(flat, 2 * latent)
        self.from_latent = nn.Linear(latent, flat)
        self.relu_latent = nn.ReLU()
        dec: list[nn.Module] = []
        rev = channels[::-1]
        for i, (cin, cout) in enumerate(zip(rev[:-1], rev[1:], strict=True)):
            dec.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
            if i < len(rev) - 2:
                dec.append(nn.ReLU())
        self.decoder = nn.Sequential(*dec)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.to_stats.bias)
        self.to_stats.weight.data.mul_(0.1)  # start near the prior: small mu, logvar ~ 0

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance ``[N, latent]`` each of q(z | x) (Eq. 3's mu and Sigma^2)."""
        stats = self.to_stats(self.encoder(x).flatten(1))
        mu, logvar = stats.chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised images ``[N, C, H, W]`` from latents ``[N, latent]`` (Eq. 4)."""
        h = self.relu_latent(self.from_latent(z)).view(len(z), *self.bottom)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic reconstruction ``decode(mu(x))``."""
        return self.decode(self.encode(x)[0])


def build(
    *,
    num_classes: int = 1,
    in_channels: int = 3,
    image_size: int | list[int] = 32,
    latent: int | None = None,
    width: int = 16,
) -> ConvVAE:
    """A :class:`ConvVAE`; ``num_classes`` is ignored (the registry's signature)."""
    del num_classes
    size = image_size if isinstance(image_size, int) else tuple(image_size)
    return ConvVAE(in_channels=in_channels, image_size=size, latent=latent, width=width)


def is_vae(module: object) -> bool:
    """True for a module with ``encode(x) -> (mu, logvar)`` and ``decode(z)`` methods."""
    return (
        isinstance(module, nn.Module)
        and callable(getattr(module, "encode", None))
        and callable(getattr(module, "decode", None))
    )


class ELBO(Objective):
    """Negative evidence lower bound of a VAE (Kingma & Welling 2014; paper 004, Eq. 5).

    Per image: reconstruction ``sum (decode(z) - x)^2`` over pixels (a Gaussian
    decoder of fixed variance 1/2 on normalised images, up to a constant) plus
    ``beta`` times ``KL(q(z|x) || N(0, I))``, with one reparameterised sample
    ``z = mu + eps * sigma``; the batch loss is the mean over images. The model
    needs ``encode(x) -> (mu, logvar)`` and ``decode(z)``; labels are ignored.
    Reports ``recon`` and ``kl`` (per image) beside the loss, and no accuracy.
    """

    def __init__(self, beta: float = 1.0) -> None:
        if not beta >= 0:
            raise ConfigError(f"beta must be >= 0, got {beta}")
        self.beta = float(beta)

    def loss(self, model, x, y):
        if not (
            callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))
        ):
            raise ConfigError("ELBO needs a model with encode(x) -> (mu, logvar) and decode(z)")
        mu, logvar = model.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if model.training else mu
        recon = ((model.decode(z) - x) ** 2).flatten(1).sum(1)
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)
        loss = (recon + self.beta * kl).mean()
        return loss, {
            "count": float(len(x)),
            "recon": float(recon.detach().sum()),
            "kl": float(kl.detach().sum()),
        }


register(
    "conv-vae",
    "convolutional VAE (latent 64 at 32x32, 128 at 64x64) for re-label distillation; no head",
    kind="generator",
)(build)

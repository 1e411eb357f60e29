"""Synthetic images around an input: perturbed VAE latents, decoded (paper 004, Eqs. 3-4).

``(mu, logvar) = vae.encode(x)``; ``z_i = mu + scale * eps_i * sigma`` with
``sigma = exp(logvar / 2)`` and ``eps_i ~ N(0, I)``, ``i = 1..n``; ``x'_i =
vae.decode(z_i)`` (``anchor="reconstruction"``, the paper's). With ``anchor="input"``
(beyond the paper) the decoded change is added to the input instead:
``x'_i = x + vae.decode(z_i) - vae.decode(mu)``, so that ``x'_i = x`` at scale 0 and
a network that does not recognise the VAE's blurred reconstructions still sees the
input's own detail around every perturbation. The noise ``eps`` is drawn once per call from a seeded
generator, so a scale search re-decodes the same directions at another
length. Decoding runs every synthetic image of a batch of inputs through one
chunked pass (:func:`cnnlens.chunking.run_chunked`).
"""

from __future__ import annotations

import torch
from torch import nn

from ...chunking import chunk_size, run_chunked
from ...errors import InputError, first_line
from ...placement import model_device
from .vae import is_vae


def vae_shape(vae: nn.Module) -> tuple[int, ...] | None:
    """The ``(C, H, W)`` a VAE was built or saved for, where it says."""
    meta = getattr(vae, "meta", None)
    if isinstance(meta, dict) and meta.get("input_shape"):
        return tuple(int(v) for v in meta["input_shape"])
    shape = getattr(vae, "image_shape", None)
    return None if shape is None else tuple(int(v) for v in shape)


def check_vae(vae: object, inputs: torch.Tensor, model: nn.Module | None = None) -> nn.Module:
    """``vae`` if it encodes and decodes images shaped like ``inputs``, else an InputError.

    Also compares the normalisation the VAE and the model were saved with, where
    both recorded one (the VAE must see images normalised as the model does).
    """
    if vae is None:
        raise InputError(
            "relabel needs a VAE trained on the model's data: pass vae=<ConvVAE or saved VAE "
            "folder> (cnnlens.studies.relabel.train_vae(data, out=...) or `cnnlens train-vae`)"
        )
    if isinstance(vae, str | bytes) or hasattr(vae, "__fspath__"):
        from .vae_training import open_vae

        vae = open_vae(vae)
    if not is_vae(vae):
        raise InputError(
            f"vae must be a module with encode(x) -> (mu, logvar) and decode(z) "
            "(e.g. cnnlens.studies.relabel.vae.ConvVAE) or a saved VAE folder, "
            f"got {type(vae).__name__}"
        )
    given = tuple(inputs.shape[1:])
    expected = vae_shape(vae)
    if expected is not None and expected != given:
        raise InputError(
            f"the VAE was trained on {_describe(expected)} images; the inputs are "
            f"{_describe(given)}: train a VAE on this data (cnnlens.studies.relabel.train_vae)"
        )
    device = model_device(vae)
    try:
        with torch.no_grad():
            mu, logvar = vae.encode(inputs[:1].to(device))
            back = vae.decode(mu)
    except (RuntimeError, ValueError) as exc:
        raise InputError(
            f"the VAE cannot encode {_describe(given)} images: {first_line(exc)}"
        ) from None
    if mu.shape != logvar.shape or mu.dim() != 2 or tuple(back.shape[1:]) != given:
        raise InputError(
            f"the VAE maps {_describe(given)} images to {tuple(back.shape[1:])}; it must "
            "encode to (mu, logvar) [N, latent] each and decode back to the input shape"
        )
    if model is not None:
        _check_normalisation(vae, model)
    return vae


def _describe(shape: tuple[int, ...]) -> str:
    return (
        "x".join(str(v) for v in shape) if len(shape) != 3 else f"{shape[0]}x{shape[1]}x{shape[2]}"
    )


def _check_normalisation(vae: nn.Module, model: nn.Module) -> None:
    ours, theirs = getattr(vae, "meta", None), getattr(model, "meta", None)
    if not (isinstance(ours, dict) and isinstance(theirs, dict)):
        return
    for key in ("mean", "std"):
        a, b = ours.get(key), theirs.get(key)
        if a and b and (len(a) != len(b) or any(abs(p - q) > 1e-4 for p, q in zip(a, b))):
            raise InputError(
                f"the VAE was trained on images normalised with {key} {a}, the model with "
                f"{b}: train the VAE on the model's data and normalisation"
            )


@torch.no_grad()
def encode(vae: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation ``[N, L]`` of q(z | x), on the inputs' device."""
    device = model_device(vae)
    mu, logvar = vae.encode(inputs.to(device))
    return mu.to(inputs.device), (0.5 * logvar).exp().to(inputs.device)


def latent_noise(
    count: int, n: int, latent: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``eps ~ N(0, I)``, ``[count, n, latent]``, from ``generator``."""
    return torch.randn(count, n, latent, generator=generator, device=device)


class _Decoder(nn.Module):
    """``vae.decode`` as a module, so the batching helper can size its chunks."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)


@torch.no_grad()
def decode_perturbed(
    vae: nn.Module,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    eps: torch.Tensor,
    scale: torch.Tensor,
    *,
    offset: torch.Tensor | None = None,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
) -> torch.Tensor:
    """``decode(mu_k + scale_k * eps_ki * sigma_k)`` (plus ``offset_k`` ``[K, C, H, W]``
    where given) for images ``k`` and samples ``i``: ``[K * n, C, H, W]`` (image-major),
    one chunked pass over all of them."""
    count, n, _latent = eps.shape
    device = model_device(vae)
    out_device = mu.device
    size = chunk_size(
        _Decoder(vae), mu[:1].to(device), backward=False, batch_size=batch_size, memory=memory
    )

    def decode(start: int, stop: int) -> torch.Tensor:
        item = torch.arange(start, stop, device=out_device)
        k, i = item // n, item % n
        z = mu[k] + scale[k, None] * eps[k, i] * sigma[k]
        decoded = vae.decode(z.to(device)).to(out_device)
        return decoded if offset is None else decoded + offset[k]

    return run_chunked(decode, count * n, size)


ANCHORS = ("reconstruction", "input")


@torch.no_grad()
def anchor_offset(
    vae: nn.Module, inputs: torch.Tensor, mu: torch.Tensor, anchor: str
) -> torch.Tensor | None:
    """What :func:`decode_perturbed` adds to each decoded sample: None for the paper's
    ``"reconstruction"``, ``x - decode(mu)`` for ``"input"``."""
    if anchor == "reconstruction":
        return None
    device = model_device(vae)
    return inputs - vae.decode(mu.to(device)).to(inputs.device)

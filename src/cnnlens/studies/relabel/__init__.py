"""Re-label distillation (paper 004: "Interpret the Predictions of Deep Networks via
Re-Label Distillation"): a VAE, perturbed latents, labels from the network, a linear student.
"""

from .vae_training import (
    QUICK_VAE,
    VAE_CONFIG,
    TrainedVAE,
    open_vae,
    reconstruction_quality,
    train_vae,
    vae_folder,
)

__all__ = [
    "QUICK_VAE",
    "VAE_CONFIG",
    "TrainedVAE",
    "open_vae",
    "reconstruction_quality",
    "train_vae",
    "vae_folder",
]

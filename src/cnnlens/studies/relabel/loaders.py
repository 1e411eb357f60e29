"""The loader of re-label distillation's VAE (:mod:`cnnlens.loading`), saved by
:func:`~cnnlens.studies.relabel.vae_training.train_vae` as the ``conv-vae`` architecture."""

from __future__ import annotations

from ...loading.registry import arch_name, register
from .vae_training import open_vae

register(
    "vae",
    opens=lambda meta: arch_name(meta) == "conv-vae",
    load=open_vae,
    description="the VAE of re-label distillation (cnnlens train-vae); a generator",
)

"""The loader of paper 002's decomposed classifiers (:mod:`cnnlens.loading`), saved by
:func:`~cnnlens.studies.decompose.decomposed.save_decomposed` with ``extra.decomposed``."""

from __future__ import annotations

from ...loading.registry import extras, register
from .decomposed import load_decomposed

register(
    "decomposed",
    opens=lambda meta: "decomposed" in extras(meta),
    load=load_decomposed,
    description="a classifier with a decomposed head (cnnlens decompose --retrain)",
)

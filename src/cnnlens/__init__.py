"""cnnlens: look inside convolutional networks.

Explain single predictions (attribution maps), score how faithful those
explanations are, and analyse the model itself. See README.md for a tour.
"""

from __future__ import annotations

from ._version import __version__
from .attribution import explain, methods
from .checkpoint import save
from .cost import macs
from .errors import (
    CheckpointError,
    CnnlensError,
    ConfigError,
    DataError,
    InputError,
    LayerError,
    TargetError,
)
from .loading import ModelCard, load
from .metrics.evaluate import evaluate
from .types import Curve, Explanation

__all__ = [
    "CheckpointError",
    "CnnlensError",
    "ConfigError",
    "Curve",
    "DataError",
    "Explanation",
    "InputError",
    "LayerError",
    "ModelCard",
    "TargetError",
    "__version__",
    "evaluate",
    "explain",
    "load",
    "macs",
    "methods",
    "save",
]

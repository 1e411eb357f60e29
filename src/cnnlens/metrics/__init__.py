"""Scores for explanations: faithfulness, localisation and sanity, all batched.

Every metric has one signature, ``metric(model, inputs, maps, target=None,
**params) -> Result`` (``values [N]``, ``curves [N,S]`` for curve metrics,
``mean``, ``to_rows()``); ``maps`` is any ``[N,1,H,W]`` tensor or an
:class:`~cnnlens.Explanation`. Localisation metrics accept ``model=None``.
"""

from __future__ import annotations

from .baselines import random_map, sobel_map
from .causal import default_step, deletion, insertion
from .completeness import completeness
from .degradation import default_tiles, degradation
from .localisation import bbox_score, energy_pointing_game, object_masks, pointing_game
from .result import Result, ci95
from .sanity import cascade_groups, randomisation_check
from .similarity import spearman, ssim

__all__ = [
    "Result",
    "bbox_score",
    "cascade_groups",
    "ci95",
    "completeness",
    "default_step",
    "default_tiles",
    "degradation",
    "deletion",
    "energy_pointing_game",
    "insertion",
    "object_masks",
    "pointing_game",
    "random_map",
    "randomisation_check",
    "sobel_map",
    "spearman",
    "ssim",
]

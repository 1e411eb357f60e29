"""Scores for explanations: faithfulness, localisation and sanity, all batched.

Every metric has one signature, ``metric(model, inputs, maps, target=None,
**params) -> Result`` (``values [N]``, ``curves [N,S]`` for curve metrics,
``mean``, ``to_rows()``); ``maps`` is any ``[N,1,H,W]`` tensor or an
:class:`~cnnlens.Explanation`. Localisation metrics accept ``model=None``.

Metrics by name: ``names()`` lists the registered ids (hyphenated: ``pointing-game``;
the old underscored spellings are still accepted for one release), ``get(name)`` the
entry with its facts (description, lower or higher is better, curve or scalar, what it
needs, its settings): see :mod:`.registry`.

Optional faithfulness and robustness metrics (not in ``evaluate``'s default
"all" set): :func:`max_sensitivity` (Yeh et al. 2019, SENS_MAX),
:func:`infidelity` (Yeh et al. 2019, eq. 1, Gaussian perturbations) and
:func:`road` (Rong et al. 2022, ROAD with noisy linear imputation).
"""

from __future__ import annotations

from .baselines import random_map, sobel_map
from .causal import default_step, deletion, insertion
from .completeness import completeness
from .degradation import default_tiles, degradation
from .infidelity import infidelity
from .localisation import bbox_score, energy_pointing_game, object_masks, pointing_game
from .registry import Metric, get, names, register
from .result import Result, ci95
from .road import road
from .sanity import cascade_groups, randomisation_check
from .sensitivity import max_sensitivity
from .similarity import spearman, ssim

__all__ = [
    "Metric",
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
    "get",
    "infidelity",
    "insertion",
    "max_sensitivity",
    "names",
    "object_masks",
    "pointing_game",
    "random_map",
    "randomisation_check",
    "register",
    "road",
    "sobel_map",
    "spearman",
    "ssim",
]

"""Paper 002, "Decomposing the Deep: Finding Class Specific Filters in Deep CNNs".

- :mod:`.influential` the class-specific influential features (Algorithm 1);
- :mod:`.decomposed` the decomposed final layer (:func:`decompose`, its MACs, saving);
- :mod:`.relative` relative accuracy r_A and its sweep over k1, k2 (Figure 3);
- :mod:`.retrain` retraining on the influential features;
- :mod:`.ablation` noise on the non-influential features (Table 8);
- :mod:`.maps` influential-feature maps and their in-mask energy (Table 7, measurable);
- :mod:`.overlap` the Jaccard overlap of the classes' features (disentanglement);
- :mod:`.study` the depth study (Figure 4) across CIFAR ResNet depths; :mod:`.stages` r_A
  against depth through one network, for the ImageNet-shaped families; :mod:`.pipeline`
  the whole decomposition of one model (``cnnlens decompose``), measured and written;
  :mod:`.plots` its figures;
- :mod:`.loaders` opening saved decomposed classifiers through :func:`cnnlens.load`.
"""

from __future__ import annotations

import importlib

# retrain is also the name of its module: importing the function here keeps the name the
# function, whichever submodule was imported first (a lazy name would lose to the module)
from .retrain import retrain, retrain_config

# Exports by defining submodule, imported on first use: cnnlens.load discovers
# loaders.py here, which must not pull in the whole study.
_EXPORTS = {
    "DEPTHS": ".study",
    "DecomposedHead": ".decomposed",
    "InfluentialFeatures": ".influential",
    "decompose": ".decomposed",
    "depth_points": ".stages",
    "depth_study": ".study",
    "energy_table": ".maps",
    "head_macs": ".decomposed",
    "in_mask_energy": ".maps",
    "influential_maps": ".maps",
    "jaccard_matrix": ".overlap",
    "load_decomposed": ".decomposed",
    "mean_overlap": ".overlap",
    "noise_ablation": ".ablation",
    "relative_accuracy": ".relative",
    "run_decompose": ".pipeline",
    "save_decomposed": ".decomposed",
    "stage_depth": ".stages",
    "sweep": ".relative",
    "sweep_grid": ".relative",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "DEPTHS",
    "DecomposedHead",
    "InfluentialFeatures",
    "decompose",
    "depth_points",
    "depth_study",
    "energy_table",
    "head_macs",
    "in_mask_energy",
    "influential_maps",
    "jaccard_matrix",
    "load_decomposed",
    "mean_overlap",
    "noise_ablation",
    "relative_accuracy",
    "retrain",
    "retrain_config",
    "run_decompose",
    "save_decomposed",
    "stage_depth",
    "sweep",
    "sweep_grid",
]

"""Model-level analyses: what a trained network does as a whole, not one prediction.

The generic toolkit's analyses, in four groups; each follows the scikit-learn
estimator style (keyword hyperparameters, ``fit(model, data)`` returning ``self``,
learned attributes ending in ``_``):

- :mod:`.concepts`: concept activation vectors and TCAV (Kim et al. 2018), network
  dissection (Bau et al. 2017) and the concept image sets and masks they read;
- :mod:`.similarity`: layers compared within a model or across two (linear CKA,
  SVCCA; survey paper 001, section 3.2);
- :mod:`.visualisation`: activation maximisation and feature inversion with their
  image parameterisations (survey section 3.1);
- :mod:`.rules`: global surrogates of the network's decision (a decision tree,
  DeepRED-style layerwise rules; survey section 3.4).

:mod:`.features` (penultimate features over a data set), :mod:`.running` (running a
user's model on images with one clear error) and :mod:`.tables` (rows as CSV and
markdown) serve them all. The papers' own systems (paper 002's decomposition, DRIB's
information plane, ...) live in :mod:`cnnlens.studies`, which may use these, never the
reverse.
"""

from __future__ import annotations

import importlib
import warnings

# What this package exports, by the submodule that defines it: imported on first use, so
# opening a model (cnnlens.load discovers the studies' loaders, which use .features) does
# not import scikit-learn, SciPy and matplotlib through the analyses it does not run.
_EXPORTS = {
    "CAV": ".concepts",
    "Concept": ".concepts",
    "ConceptBank": ".concepts",
    "ConceptFlow": ".concepts",
    "ConceptMasks": ".concepts",
    "Dissection": ".concepts",
    "DissectionResult": ".concepts",
    "Facets": ".visualisation",
    "Features": ".features",
    "Inversion": ".visualisation",
    "LayerDissection": ".concepts",
    "LayerSimilarity": ".similarity",
    "LayerwiseRules": ".rules",
    "Maximisation": ".visualisation",
    "MinibatchCKA": ".similarity",
    "Objective": ".visualisation",
    "ReferenceImages": ".concepts",
    "SVCCAResult": ".similarity",
    "SurrogateTree": ".rules",
    "TCAV": ".concepts",
    "TCAVResult": ".concepts",
    "cka_matrix": ".similarity",
    "collect_features": ".features",
    "concept_flow": ".concepts",
    "concept_match": ".concepts",
    "conditional_relevance": ".concepts",
    "colour_decorrelation": ".visualisation",
    "default_layers": ".similarity",
    "discover_concepts": ".concepts",
    "tcav_links": ".concepts",
    "facets": ".visualisation",
    "folder_concepts": ".concepts",
    "invert": ".visualisation",
    "layer_similarity": ".similarity",
    "learn_cav": ".concepts",
    "linear_cka": ".similarity",
    "maximise": ".visualisation",
    "maximise_all": ".visualisation",
    "minibatch_cka": ".similarity",
    "shapes_concepts": ".concepts",
    "svcca": ".similarity",
    "unbiased_hsic": ".similarity",
}

# Names that lived here before the papers' systems moved to cnnlens.studies: still
# reachable for one release, with a deprecation note (the import runs only on access).
_MOVED = {
    **dict.fromkeys(
        (
            "DEPTHS DecomposedHead InfluentialFeatures decompose depth_study energy_table "
            "head_macs in_mask_energy influential_maps jaccard_matrix load_decomposed "
            "mean_overlap noise_ablation relative_accuracy retrain retrain_config "
            "run_decompose save_decomposed sweep sweep_grid"
        ).split(),
        "cnnlens.studies.decompose",
    ),
    **dict.fromkeys(
        "InformationPlane binned_information kde_information key_points".split(),
        "cnnlens.studies.drib.information_plane",
    ),
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    home = _MOVED[name]
    warnings.warn(
        f"cnnlens.analysis.{name} moved to {home}.{name}; the old name goes next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "CAV",
    "Concept",
    "ConceptBank",
    "ConceptFlow",
    "ConceptMasks",
    "Dissection",
    "DissectionResult",
    "Facets",
    "Features",
    "Inversion",
    "LayerDissection",
    "LayerSimilarity",
    "LayerwiseRules",
    "Maximisation",
    "MinibatchCKA",
    "Objective",
    "ReferenceImages",
    "SVCCAResult",
    "SurrogateTree",
    "TCAV",
    "TCAVResult",
    "cka_matrix",
    "collect_features",
    "concept_flow",
    "concept_match",
    "conditional_relevance",
    "colour_decorrelation",
    "default_layers",
    "discover_concepts",
    "tcav_links",
    "facets",
    "folder_concepts",
    "invert",
    "layer_similarity",
    "learn_cav",
    "linear_cka",
    "maximise",
    "maximise_all",
    "minibatch_cka",
    "shapes_concepts",
    "svcca",
    "unbiased_hsic",
]

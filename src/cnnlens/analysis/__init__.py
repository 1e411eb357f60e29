"""Model-level analyses: studies of what a trained network does, not of one prediction.

Each analysis follows the scikit-learn estimator style: a plain object with
keyword hyperparameters, ``fit(model, data)`` returning ``self``, and learned
attributes ending in ``_``.

Paper 002 ("Decomposing the Deep"): :class:`InfluentialFeatures` (Algorithm
1), :class:`DecomposedHead` and :func:`decompose` (the decomposed final
layer), with :func:`relative_accuracy` / :func:`sweep` (r_A, Figure 3),
:func:`retrain`, :func:`noise_ablation` (Table 8), :func:`energy_table`
(Table 7 made measurable), :func:`jaccard_matrix` (disentanglement) and
:func:`depth_study` (Figure 4).

Paper 001 (survey, sections 3.2 and 3.4): :func:`layer_similarity` between the
layers of one model or two (linear CKA, :func:`linear_cka` /
:class:`MinibatchCKA`, and :func:`svcca`), and :class:`SurrogateTree`, a decision
tree fitted to the network's predictions. Concept activation vectors (ref. 22,
Kim et al. 2018): :class:`TCAV` scores how much a concept matters to a class
(:class:`TCAVResult`), from concept image sets (:class:`Concept`,
:func:`shapes_concepts`, :func:`folder_concepts`) and CAVs (:class:`CAV`,
:func:`learn_cav`). Network dissection (ref. 47, Bau et al. 2017): :class:`Dissection`
labels each channel with the concept its top activations segment
(:class:`DissectionResult`, :class:`LayerDissection`), from per-pixel concept masks
(:class:`ConceptMasks`).

Paper 000 (section 4.3): :class:`InformationPlane`, a training callback recording
I(X;Z) and I(Z;Y) per epoch (:func:`binned_information`, :func:`kde_information`) and
the transition and convergence points (:func:`key_points`).
"""

from .ablation import noise_ablation
from .cav import CAV, learn_cav
from .cka import MinibatchCKA, cka_matrix, linear_cka, minibatch_cka, unbiased_hsic
from .concept_masks import ConceptMasks
from .concepts import Concept, folder_concepts, shapes_concepts
from .decomposed import DecomposedHead, decompose, head_macs, load_decomposed, save_decomposed
from .dissection import Dissection, DissectionResult, LayerDissection
from .features import Features, collect_features
from .image_params import colour_decorrelation
from .influential import InfluentialFeatures
from .information_plane import InformationPlane, binned_information, kde_information, key_points
from .inversion import Facets, Inversion, facets, invert
from .layer_similarity import LayerSimilarity, default_layers, layer_similarity
from .layerwise_rules import LayerwiseRules
from .maps import energy_table, in_mask_energy, influential_maps
from .maximise import Maximisation, Objective, maximise, maximise_all
from .overlap import jaccard_matrix, mean_overlap
from .pipeline import run_decompose
from .relative import relative_accuracy, sweep, sweep_grid
from .retrain import retrain, retrain_config
from .study import DEPTHS, depth_study
from .surrogate_tree import SurrogateTree
from .svcca import SVCCAResult, svcca
from .tcav import TCAV, TCAVResult

__all__ = [
    "CAV",
    "Concept",
    "ConceptMasks",
    "DEPTHS",
    "DecomposedHead",
    "Dissection",
    "DissectionResult",
    "Features",
    "InfluentialFeatures",
    "Facets",
    "Inversion",
    "facets",
    "invert",
    "LayerwiseRules",
    "InformationPlane",
    "LayerDissection",
    "LayerSimilarity",
    "Maximisation",
    "MinibatchCKA",
    "Objective",
    "SVCCAResult",
    "SurrogateTree",
    "TCAV",
    "TCAVResult",
    "binned_information",
    "cka_matrix",
    "collect_features",
    "colour_decorrelation",
    "decompose",
    "default_layers",
    "depth_study",
    "energy_table",
    "folder_concepts",
    "head_macs",
    "in_mask_energy",
    "influential_maps",
    "jaccard_matrix",
    "kde_information",
    "key_points",
    "layer_similarity",
    "learn_cav",
    "linear_cka",
    "load_decomposed",
    "maximise",
    "maximise_all",
    "mean_overlap",
    "minibatch_cka",
    "noise_ablation",
    "relative_accuracy",
    "retrain",
    "run_decompose",
    "save_decomposed",
    "shapes_concepts",
    "retrain_config",
    "sweep",
    "sweep_grid",
    "svcca",
    "unbiased_hsic",
]

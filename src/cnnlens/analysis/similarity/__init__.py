"""Layer similarity within a model or between two (survey paper 001, section 3.2): linear
CKA (Kornblith et al. 2019; :func:`linear_cka`, :class:`MinibatchCKA`), SVCCA (Raghu et
al. 2017; :func:`svcca`) and the layer-by-layer matrix of either
(:func:`layer_similarity`, shown as ``cnnlens inspect similarity`` and the report's
``internals`` section)."""

from .cka import MinibatchCKA, cka_matrix, linear_cka, minibatch_cka, unbiased_hsic
from .layer_similarity import LayerSimilarity, default_layers, layer_similarity
from .svcca import SVCCAResult, svcca

__all__ = [
    "LayerSimilarity",
    "MinibatchCKA",
    "SVCCAResult",
    "cka_matrix",
    "default_layers",
    "layer_similarity",
    "linear_cka",
    "minibatch_cka",
    "svcca",
    "unbiased_hsic",
]

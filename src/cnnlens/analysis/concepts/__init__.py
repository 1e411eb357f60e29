"""Concepts: what a channel or a direction of a layer stands for.

Concept activation vectors and TCAV (Kim et al. 2018, "Interpretability Beyond Feature
Attribution"): :class:`CAV`, :func:`learn_cav`, :class:`TCAV`; network dissection (Bau et
al. 2017): :class:`Dissection`; the concept image sets (:class:`Concept`,
:func:`shapes_concepts`, :func:`folder_concepts`) and per-pixel masks
(:class:`ConceptMasks`) they read; Concept Relevance Propagation (Achtibat et al. 2023):
:func:`conditional_relevance` and :func:`concept_flow`.
"""

from .cav import CAV, learn_cav
from .concept_masks import ConceptMasks
from .concept_sets import Concept, folder_concepts, shapes_concepts
from .crp import ConceptFlow, concept_flow, conditional_relevance
from .dissection import Dissection, DissectionResult, LayerDissection
from .tcav import TCAV, TCAVResult

__all__ = [
    "CAV",
    "Concept",
    "ConceptFlow",
    "ConceptMasks",
    "Dissection",
    "DissectionResult",
    "LayerDissection",
    "TCAV",
    "TCAVResult",
    "concept_flow",
    "conditional_relevance",
    "folder_concepts",
    "learn_cav",
    "shapes_concepts",
]

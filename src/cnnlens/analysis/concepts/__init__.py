"""Concepts: what a channel or a direction of a layer stands for.

Concept activation vectors and TCAV (Kim et al. 2018, "Interpretability Beyond Feature
Attribution"): :class:`CAV`, :func:`learn_cav`, :class:`TCAV`; network dissection (Bau et
al. 2017): :class:`Dissection`; the concept image sets (:class:`Concept`,
:func:`shapes_concepts`, :func:`folder_concepts`) and per-pixel masks
(:class:`ConceptMasks`) they read; Concept Relevance Propagation (Achtibat et al. 2023):
:func:`conditional_relevance`, :func:`concept_flow` and the reference images of
relevance maximisation, :class:`ReferenceImages`; unsupervised concepts by NMF (CRAFT, Fel
et al. 2023) or a top-k sparse autoencoder: :func:`discover_concepts`, :func:`concept_match`;
their links to TCAV concepts: :func:`tcav_links`.
"""

from .cav import CAV, learn_cav
from .concept_masks import ConceptMasks
from .concept_sets import Concept, folder_concepts, shapes_concepts
from .crp import ConceptFlow, concept_flow, conditional_relevance
from .discovery import ConceptBank, concept_match, discover_concepts
from .dissection import Dissection, DissectionResult, LayerDissection
from .linking import cav_cosines, tcav_links
from .relmax import ReferenceImages, receptive_field
from .tcav import TCAV, TCAVResult

__all__ = [
    "CAV",
    "Concept",
    "ConceptBank",
    "ConceptFlow",
    "ConceptMasks",
    "Dissection",
    "DissectionResult",
    "LayerDissection",
    "ReferenceImages",
    "TCAV",
    "TCAVResult",
    "concept_flow",
    "concept_match",
    "conditional_relevance",
    "discover_concepts",
    "cav_cosines",
    "tcav_links",
    "folder_concepts",
    "learn_cav",
    "receptive_field",
    "shapes_concepts",
]

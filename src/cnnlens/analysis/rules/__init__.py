"""Global surrogates of a network's decision (survey paper 001, section 3.4, "model
processing"): a decision tree fitted to its predictions (:class:`SurrogateTree`, Craven &
Shavlik 1996) and DeepRED-style rules layer by layer (:class:`LayerwiseRules`, Zilke et
al. 2016). Not to be confused with LIME and Kernel SHAP, the *local* surrogates of one
prediction in :mod:`cnnlens.attribution`."""

from .layerwise_rules import LayerwiseRules
from .surrogate_tree import SurrogateTree

__all__ = ["LayerwiseRules", "SurrogateTree"]

"""Paper 003, "New Perspective of Interpretability of Deep Neural Networks" (Kimura &
Tanaka 2020): the human-predictable multi-attribute network, whose channels each take one
role (an attribute) through an attention mask (``cnnlens attributes``).

- :mod:`.network` the dilated extractor and the attribute network; :mod:`.transform` the
  mask transformations (tone curves) of Fig. 8;
- :mod:`.objective`, :mod:`.training` its training through :func:`cnnlens.train.fit`;
  :mod:`.runs` reusing a finished run; :mod:`.loaders` opening it via :func:`cnnlens.load`;
- :mod:`.data` the attribute data sets; :mod:`.reading`, :mod:`.passes` reading the
  masks; :mod:`.predictability`, :mod:`.robustness`, :mod:`.pruning` the paper's
  measurements; :mod:`.study` the whole study of one model, measured and returned.

(Named for what the paper shows, the roles of channels, so that it cannot be confused
with :mod:`cnnlens.attribution`, the attribution methods.)
"""

from .network import AttributeNetwork, DilatedExtractor
from .transform import mask_transform, tone_curve

__all__ = ["AttributeNetwork", "DilatedExtractor", "mask_transform", "tone_curve"]

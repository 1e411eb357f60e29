"""Fast copies of a model that compute what it computes, through public torch APIs.

* :mod:`.folding`: BatchNorm folded into the convolution before it, ReLUs in place;
* :mod:`.layout`: channels-last memory, and the check that a copy gives the
  model's outputs;
* :mod:`.compiled`: ``torch.compile`` for the forward-only chunks of long jobs;
* :mod:`.fast`: the copy each kind of method runs (:func:`fast_copy`), cached per
  model, falling back to the model as given with a debug line of the
  ``cnnlens.accel`` logger where a copy cannot be made.

Chunking to a memory budget is :mod:`cnnlens.chunking`.
"""

from .compiled import compiled_forward
from .fast import KINDS, fast_copy, fast_model, fast_runner, forward, forward_runner
from .folding import fast_forward_copy, fold_batchnorm, foldable_pairs
from .layout import FastCopy, channels_last_if_same, same_outputs

__all__ = [
    "KINDS",
    "FastCopy",
    "channels_last_if_same",
    "compiled_forward",
    "fast_copy",
    "fast_forward_copy",
    "fast_model",
    "fast_runner",
    "fold_batchnorm",
    "foldable_pairs",
    "forward",
    "forward_runner",
    "same_outputs",
]

"""The one training loop every training in cnnlens goes through.

``fit(model, train, val, config=TrainConfig(...), objective=...)``; see
:mod:`cnnlens.train.loop` for the loop and :mod:`cnnlens.train.objectives`
for how a new kind of training plugs in.
"""

from .config import OptimizerConfig, TrainConfig
from .loop import TrainResult, evaluate, fit
from .objectives import Alternating, Classification, Objective, model_extra_loss

__all__ = [
    "Alternating",
    "Classification",
    "Objective",
    "OptimizerConfig",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "fit",
    "model_extra_loss",
]

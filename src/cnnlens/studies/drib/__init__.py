"""DRIB: dynamic per-input channel gating (paper 000; gate design of Wang et al., AAAI 2020).

- :mod:`.gate` the gated conv, its decision head and :func:`gate` (which layers);
- :mod:`.training` the alternating Gumbel-softmax training and the fixed-decision fine-tune;
- :mod:`.counting` dynamic MACs per input and the reduction ratio;
- :mod:`.sparse` the inference path that computes only the selected channels;
- :mod:`.credibility` the information-bottleneck check of the decisions (our construction);
- :mod:`.compare` IBA at a gated layer vs SmoothGrad / Grad-CAM / Guided Grad-CAM (Table 5);
- :mod:`.usage` per-class use of mask indices and channels, purity;
- :mod:`.runs` saving, loading and reusing gated models; :mod:`.loaders` opening them
  through :func:`cnnlens.load`;
- :mod:`.information_plane` I(X;Z) and I(Z;Y) per epoch, a training callback (section 4.3);
- :mod:`.baselines`, :mod:`.pruned_models`, :mod:`.baseline_study` the static pruning
  baselines at DRIB's MAC budget (Tables 1-2); :mod:`.latency` measured CPU latency;
- :mod:`.study` the DRIB study of one model (``cnnlens drib``), measured and returned.
"""

from .counting import DynamicMacs, decisions, dynamic_macs
from .gate import GatedConv, GateSpec, gate, gated_layers, opened_gates, set_mode
from .runs import gated_run, load_gated, save_gated
from .sparse import sparse_model
from .training import GateLoss, GateRecipe, train_gated
from .usage import Usage, usage

__all__ = [
    "DynamicMacs",
    "GateLoss",
    "GateRecipe",
    "GateSpec",
    "GatedConv",
    "Usage",
    "decisions",
    "dynamic_macs",
    "gate",
    "gated_layers",
    "gated_run",
    "load_gated",
    "opened_gates",
    "save_gated",
    "set_mode",
    "sparse_model",
    "train_gated",
    "usage",
]

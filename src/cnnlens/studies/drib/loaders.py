"""The loaders of paper 000's saved models (:mod:`cnnlens.loading`): DRIB-gated networks
(``extra.drib`` in ``model.json``) and channel-pruned baselines (``extra.pruned``)."""

from __future__ import annotations

from ...loading.registry import extras, register
from .pruned_models import load_pruned
from .runs import load_gated

register(
    "drib-gated",
    opens=lambda meta: "drib" in extras(meta),
    load=load_gated,
    description="a DRIB-gated network (cnnlens drib), rebuilt from extra.drib",
)
register(
    "pruned",
    opens=lambda meta: "pruned" in extras(meta),
    load=load_pruned,
    description="a channel-pruned network (cnnlens drib-baseline), shrunk to extra.pruned",
)

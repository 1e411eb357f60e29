"""The loader of paper 003's attribute networks (:mod:`cnnlens.loading`), by the
architecture ``model.json`` names; the training module is imported only to open one."""

from __future__ import annotations

from ...loading.registry import arch_name, register

# training.KINDS' values, but resnet18 (a cnnlens.nets architecture: the classifier loader)
ARCH_NAMES = ("attribute-net", "plain-attribute-cnn")


def _load(folder, *, device=None):
    from .training import load_attribute_network

    return load_attribute_network(folder, device=device)


register(
    "attribute-network",
    opens=lambda meta: arch_name(meta) in ARCH_NAMES,
    load=_load,
    description="a multi-attribute network of paper 003 (cnnlens attributes), pruned or not",
)

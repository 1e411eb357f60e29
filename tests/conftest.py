"""Shared fixtures: small data, and one trained demo-style model per test session."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("CNNLENS_QUIET", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shapes_test():
    from cnnlens.data import load

    return load("shapes", split="test")


@pytest.fixture(scope="session")
def trained_shapes(tmp_path_factory):
    """ResNet-20 trained on ``shapes`` with the demo's recipe, shortened to 4 epochs.

    Shared by every test that needs a model that has learnt something real
    (object-removed accuracy, pointing game, model analyses).
    """
    import dataclasses

    from cnnlens.train.classifier import DEMO_CONFIG, train_classifier

    out = tmp_path_factory.mktemp("trained-shapes")
    config = dataclasses.replace(DEMO_CONFIG, epochs=4)
    return train_classifier(data="shapes", arch="resnet20", out=out, config=config)

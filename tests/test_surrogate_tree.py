"""SurrogateTree (paper 001, section 3.4): a decision tree fitted to a network's predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnlens.analysis import SurrogateTree
from cnnlens.errors import InputError
from cnnlens.hooks import model_fingerprint, same_fingerprint


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.pool(self.relu(self.conv(x))).flatten(1))


@pytest.fixture(scope="module")
def setup():
    gen = torch.Generator().manual_seed(0)
    model = TinyNet()
    x = torch.randn(120, 3, 6, 6, generator=gen) * torch.rand(120, 3, 1, 1, generator=gen) * 3
    y = torch.randint(0, 3, (120,), generator=gen)  # labels unrelated to the predictions
    with torch.no_grad():  # a head that splits these images between the classes
        mean = penultimate(model, x).mean(0)
        model.head.weight.copy_(torch.randn(3, 6, generator=gen))
        model.head.bias.copy_(-(model.head.weight.double() @ torch.from_numpy(mean)).float())
        predicted = model(x).argmax(1)
    assert len(predicted.unique()) == 3  # the tree has something to learn
    return model, (x[:80], y[:80]), (x[80:], y[80:]), predicted


def penultimate(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The head's input, from the model's own modules (not cnnlens' collection)."""
    with torch.no_grad():
        return model.pool(model.relu(model.conv(x))).flatten(1).double().numpy()


@pytest.mark.parametrize("max_depth", [1, 2, 3])
def test_fidelity_is_agreement_with_the_network(setup, max_depth):
    model, train, test, predicted = setup
    model.train()
    before = model_fingerprint(model)
    tree = SurrogateTree(max_depth=max_depth).fit(model, train)
    fidelity = tree.score(model, test)
    assert same_fingerprint(before, model_fingerprint(model))
    expected = float(
        (tree.tree_.predict(penultimate(model, test[0])) == predicted[80:].numpy()).mean()
    )
    assert 0 <= fidelity <= 1 and fidelity == pytest.approx(expected) == tree.fidelity_
    assert tree.depth_ <= max_depth and tree.depth_ == tree.tree_.get_depth()
    train_agree = tree.tree_.predict(penultimate(model, train[0])) == predicted[:80].numpy()
    assert tree.train_fidelity_ == pytest.approx(float(train_agree.mean()))
    assert "penultimate[" in tree.rules_ and "class:" in tree.rules_
    np.testing.assert_array_equal(
        tree.predict(model, test), tree.tree_.predict(penultimate(model, test[0]))
    )


def test_fits_predictions_not_labels_from_given_features(setup):
    model, train, test, predicted = setup

    # one interpretable feature per class that says what the network predicts, plus noise
    def features(p, seed):
        noise = torch.rand(len(p), 1, generator=torch.Generator().manual_seed(seed))
        return torch.cat([nn.functional.one_hot(p, 3).double(), noise.double()], 1)

    names = ["says_a", "says_b", "says_c", "noise"]
    tree = SurrogateTree(max_depth=3).fit(
        model, train, features=features(predicted[:80], 1), feature_names=names
    )
    assert tree.train_fidelity_ == 1.0  # labels are random: only the predictions fit this well
    assert tree.score(model, test, features=features(predicted[80:], 2)) == 1.0
    assert "says_" in tree.rules_ and "penultimate" not in tree.rules_
    assert tree.feature_names_ == names


def test_errors(setup):
    model, train, test, _predicted = setup
    with pytest.raises(InputError, match="not fitted yet"):
        SurrogateTree().score(model, test)
    with pytest.raises(InputError, match="max_depth .* got 0"):
        SurrogateTree(max_depth=0).fit(model, train)
    with pytest.raises(InputError, match=r"N = 80\), got shape \(79, 2\)"):
        SurrogateTree().fit(model, train, features=torch.zeros(79, 2))
    with pytest.raises(InputError, match="1 feature_names for 6 features"):
        SurrogateTree().fit(model, train, feature_names=["a"])
    tree = SurrogateTree(max_depth=2).fit(model, train)
    with pytest.raises(InputError, match="fitted on penultimate features"):
        tree.score(model, test, features=torch.zeros(40, 6))

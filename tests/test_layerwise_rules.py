"""LayerwiseRules (DeepRED-style rule extraction) on a constructed network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnlens.analysis import LayerwiseRules, SurrogateTree
from cnnlens.data.base import TensorDataset
from cnnlens.errors import InputError, LayerError
from cnnlens.hooks import model_fingerprint, same_fingerprint


def _and_network(a: int = 4) -> nn.Module:
    """Copies the input features (a 1x1 identity conv) and predicts class 1 iff the
    first two features are both 1: logit_1 - logit_0 = x0 + x1 - 1.5."""
    conv = nn.Conv2d(a, a, 1, bias=False)
    head = nn.Linear(a, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(a)[:, :, None, None])
        head.weight.zero_()
        head.weight[1, :2] = 1.0
        head.bias.copy_(torch.tensor([0.0, -1.5]))
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()


def _data(n: int, a: int = 4, seed: int = 0):
    """Binary features, exactly 40 % ones per feature (so each unit's median is 0), as
    constant images; the labels do not matter (the rules imitate the network)."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.zeros(n, a)
    for j in range(a):
        feats[torch.randperm(n, generator=gen)[: int(0.4 * n)], j] = 1.0
    images = feats[:, :, None, None].expand(n, a, 2, 2).contiguous()
    data = TensorDataset(images, torch.zeros(n, dtype=torch.long), classes=["no", "yes"],
                         mean=[0.0] * a, std=[1.0] * a)  # fmt: skip
    return data, feats


def test_recovers_the_known_rule_with_full_fidelity():
    model = _and_network()
    train, x_train = _data(200)
    test, x_test = _data(100, seed=1)
    before = model_fingerprint(model)
    rules = LayerwiseRules(["0"], max_depth=3, min_samples_leaf=1)
    rules.fit(model, train, features=x_train, feature_names=["a", "b", "c", "d"])
    assert same_fingerprint(before, model_fingerprint(model))
    assert rules.train_fidelity_ == 1.0 and rules.score(model, test, features=x_test) == 1.0
    # the composed rules on the inputs are exactly "yes iff a and b": three leaves
    assert rules.n_rules_ == 3
    table = np.array([[i, j, k, m] for i in (0, 1) for j in (0, 1) for k in (0, 1) for m in (0, 1)])
    assert (rules.predict(table) == (table[:, 0] & table[:, 1])).all()
    assert "a" in rules.rules_ and "b" in rules.rules_ and "c <=" not in rules.rules_
    tree = SurrogateTree(max_depth=3).fit(model, train, features=x_train)
    assert tree.score(model, test, features=x_test) == 1.0


def test_bad_input_is_a_clear_error():
    model = _and_network()
    train, x_train = _data(20)
    with pytest.raises(LayerError):
        LayerwiseRules(["nope"]).fit(model, train, features=x_train)
    with pytest.raises(InputError, match="max_depth must be an integer >= 1"):
        LayerwiseRules(["0"], max_depth=0).fit(model, train, features=x_train)
    with pytest.raises(InputError, match="features must be"):
        LayerwiseRules(["0"]).fit(model, train, features=x_train[:5])
    with pytest.raises(InputError, match="not fitted"):
        LayerwiseRules(["0"]).predict(x_train)


def test_inspect_rules_command_writes_both_fidelities(tmp_path, capsys):
    import json

    from cnnlens import checkpoint, nets
    from cnnlens.cli import main
    from cnnlens.data import load

    shapes = load("shapes", split="test", n=4)
    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=len(shapes.classes))
    checkpoint.save(model, tmp_path / "m", classes=shapes.classes, mean=shapes.mean, std=shapes.std)
    args = ["inspect", "rules", "--model", str(tmp_path / "m"), "--data", "shapes"]
    args += ["--layers", "layer1,layer2", "--n-train", "64", "--images", "32"]
    assert main([*args, "--out", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "rules.json").read_text())
    for part in ("layerwise", "surrogate_tree"):
        assert 0 <= summary[part]["test_fidelity"] <= 1, part
    assert summary["test_images"] == 32 and "fidelity" in capsys.readouterr().out
    bad = main([*args, "--layers", "nope", "--out", str(tmp_path / "x")])
    assert bad == 2 and not (tmp_path / "x").exists()

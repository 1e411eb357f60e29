"""Paper 003, Table 3 as cnnlens runs it: the attribute models compared on one budget."""

from __future__ import annotations

import pytest
import torch

from cnnlens.errors import InputError
from cnnlens.studies.channel_roles.study import comparison_table, model_comparison
from cnnlens.studies.channel_roles.training import load_attribute_network

TINY = {"data": "shapes", "size": 16, "n_train": 96, "n_test": 48, "epochs": 1}


def test_plain_cnn_and_resnet18_on_one_budget_then_reused(tmp_path):
    result = model_comparison(tmp_path, kinds=("plain", "resnet18"), **TINY)
    rows = result["models"]
    assert list(rows) == ["plain CNN", "ResNet-18"]
    names = result["attributes"]
    assert len(names) == 10 and result["test_images"] == 48
    for row in rows.values():
        assert set(row["accuracy"]) == set(names) and not row["reused"]
        values = list(row["accuracy"].values())
        assert all(0 <= v <= 1 for v in values)
        assert row["mean_accuracy"] == pytest.approx(sum(values) / len(values))
    assert rows["ResNet-18"]["parameters"] > 10 * rows["plain CNN"]["parameters"]
    # the saved ResNet-18 reopens with its attribute names and gives the recorded accuracy
    model = load_attribute_network(tmp_path / "resnet18" / "model")
    assert model.attribute_names == names
    again = model_comparison(tmp_path, kinds=("resnet18",), **TINY)["models"]["ResNet-18"]
    assert again["reused"] and again["accuracy"] == rows["ResNet-18"]["accuracy"]
    from cnnlens.studies.channel_roles.training import attribute_accuracy, load_splits

    _train, test = load_splits("shapes", size=16, n_train=96, n_test=48)
    measured = attribute_accuracy(model, test)
    torch.testing.assert_close(
        measured.double(), torch.tensor([rows["ResNet-18"]["accuracy"][a] for a in names]).double()
    )
    table = comparison_table(result)
    assert table.count("\n") == 3 and "| ResNet-18 |" in table and "| mean |" in table


def test_unknown_kind_is_refused_before_training(tmp_path):
    with pytest.raises(InputError, match="unknown model kind 'vgg'"):
        model_comparison(tmp_path, kinds=("vgg",), **TINY)
    assert not any(tmp_path.iterdir())

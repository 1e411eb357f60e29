"""``cnnlens inspect ...`` end to end, on small saved models."""

from __future__ import annotations

import json

import pytest
import torch

from cnnlens import checkpoint, nets
from cnnlens.cli import main
from cnnlens.data import load


def _saved(folder, seed: int = 0):
    torch.manual_seed(seed)
    model = nets.create("resnet8", num_classes=8).eval()
    shapes = load("shapes", split="test", n=16)
    checkpoint.save(model, folder, classes=shapes.classes, mean=shapes.mean, std=shapes.std)
    return folder


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect-models")
    return _saved(root / "a", 0), _saved(root / "b", 1)


def test_inspect_lists_its_subcommands(capsys):
    assert main(["inspect", "--help"]) == 0
    listing = capsys.readouterr().out
    for name in ("similarity", "surrogate", "tcav", "dissect"):
        assert name in listing
        assert main(["inspect", name, "--help"]) == 0
        assert "Usage" in capsys.readouterr().out


def test_similarity_within_and_across_models(two_models, tmp_path, capsys):
    a, b = two_models
    out = tmp_path / "within"
    args = ["inspect", "similarity", "--model", str(a), "--images", "64", "--out", str(out)]
    assert main(args) == 0
    result = json.loads((out / "similarity.json").read_text())
    matrix = torch.tensor(result["matrix"])
    assert matrix.shape == (len(result["rows"]), len(result["rows"]))
    assert torch.allclose(matrix.diagonal(), torch.ones(len(matrix)), atol=1e-6)
    assert (out / "similarity.png").stat().st_size > 0

    across = tmp_path / "across"
    args = ["inspect", "similarity", "--model", str(a), "--other", str(b), "--images", "64"]
    assert main([*args, "--estimator", "full", "--out", str(across)]) == 0
    other = torch.tensor(json.loads((across / "similarity.json").read_text())["matrix"])
    # two differently initialised networks are not the same representation
    assert other.diagonal().min() < 0.999
    assert "same layer, two models" in capsys.readouterr().out


def test_similarity_defaults_to_the_model_folder(two_models):
    a, _ = two_models
    args = ["inspect", "similarity", "--model", str(a), "--images", "8", "--layers", "layer1"]
    assert main(args) == 0
    assert (a / "inspect" / "similarity" / "similarity.json").is_file()


def test_surrogate_writes_rules_and_fidelity(two_models, tmp_path, capsys):
    a, _ = two_models
    out = tmp_path / "tree"
    args = ["inspect", "surrogate", "--model", str(a), "--n-train", "200", "--images", "100"]
    assert main([*args, "--max-depth", "3", "--out", str(out)]) == 0
    summary = json.loads((out / "surrogate.json").read_text())
    assert summary["depth"] <= 3 and summary["test_images"] == 100
    assert 0.0 <= summary["test_fidelity"] <= 1.0
    assert "|---" in (out / "rules.txt").read_text()
    assert "fidelity" in capsys.readouterr().out


def test_tcav_scores_concepts_by_class(two_models, tmp_path, capsys):
    a, _ = two_models
    out = tmp_path / "tcav"
    args = ["inspect", "tcav", "--model", str(a), "--concepts", "striped,filled=0,class=star"]
    args += ["--concept-images", "12", "--random", "3", "--images", "48", "--out", str(out)]
    assert main(args) == 0
    result = json.loads((out / "tcav.json").read_text())
    assert result["n_random"] == 3
    rows = result["rows"]  # one per (concept, class)
    classes = {row["class"] for row in rows}
    assert [row["concept"] for row in rows[:: len(classes)]] == [
        "striped",
        "filled=0",
        "class=star",
    ]
    assert all(0 <= s <= 1 and len(row["scores"]) == 3 for row in rows for s in row["scores"])
    assert sum(row["n_images"] for row in result["random"]) == 48
    assert (out / "tcav.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "striped:" in printed and "random sets' means" in printed
    assert result["test"] == "exchangeable"
    kim = tmp_path / "kim"
    assert main([*args[:-1], str(kim), "--test", "kim"]) == 0
    assert json.loads((kim / "tcav.json").read_text())["test"] == "kim"
    assert "(Kim et al.)" in capsys.readouterr().out
    assert main([*args[:-1], str(tmp_path / "bad"), "--test", "welch"]) == 2
    assert "test must be one of" in capsys.readouterr().err


def test_dissect_writes_json_channels_and_figures(two_models, tmp_path, capsys):
    a, _ = two_models
    out = tmp_path / "dissect"
    args = ["inspect", "dissect", "--model", str(a), "--images", "24", "--layer", "layer1,layer3"]
    args += ["--concepts", "object,background,class=star,striped", "--top-k", "4"]
    assert main([*args, "--figures", "2", "--out", str(out)]) == 0
    result = json.loads((out / "dissection.json").read_text())
    assert [layer["layer"] for layer in result["layers"]] == ["layer1", "layer3"]
    assert result["concepts"] == ["object", "background", "class=star", "striped"]
    assert result["n_images"] == 24 and result["quantile"] == 0.995
    layer3 = result["layers"][1]
    assert layer3["channels"] == len(layer3["units"]) == 64
    assert len(layer3["iou"]) == 64 and len(layer3["iou"][0]) == 4
    assert all(len(unit["top_images"]) == 4 for unit in layer3["units"])
    lines = (out / "channels.csv").read_text().splitlines()
    assert lines[0].startswith("layer,channel,label,best_concept,iou") and len(lines) == 1 + 80
    for name in ("dissection.png", "top-images.png", "top-images-layer1.png"):
        assert (out / name).stat().st_size > 0
    printed = capsys.readouterr().out
    assert "layer1: " in printed and "interpretable" in printed and "detectors" in printed


@pytest.mark.parametrize(
    "args, message",
    [
        (["similarity", "--method", "pca"], "pca"),
        (["similarity", "--layers", "nosuchlayer"], "nosuchlayer"),
        (["similarity", "--images", "100000"], "--images 100000"),
        (["surrogate", "--data", "digits"], "digits"),
        (["tcav", "--concepts", "nosuch"], "nosuch"),
        (["tcav", "--concepts", "striped", "--concept-folder", "."], "not both"),
        (["tcav", "--layer", "nosuchlayer", "--concepts", "striped"], "nosuchlayer"),
        (["dissect", "--concepts", "furry"], "furry"),
        (["dissect", "--layers", "head"], "spatial map"),
        (["dissect", "--rank-by", "median"], "median"),
    ],
)
def test_bad_input_is_one_line(two_models, tmp_path, capsys, args, message):
    a, _ = two_models
    code = main(["inspect", args[0], "--model", str(a), *args[1:], "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error:") and message in err and "Traceback" not in err

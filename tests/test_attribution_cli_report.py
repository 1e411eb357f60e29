"""``cnnlens explain`` and the report's "Explanations" section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnlens import checkpoint, nets
from cnnlens.attribution import methods
from cnnlens.cli import main
from cnnlens.commands.explain import method_names, parse_index, parse_params
from cnnlens.errors import InputError


@pytest.fixture(scope="module")
def saved(tmp_path_factory, shapes_test):
    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=len(shapes_test.classes))
    folder = tmp_path_factory.mktemp("explain-model") / "model"
    checkpoint.save(
        model, folder, classes=shapes_test.classes, mean=shapes_test.mean, std=shapes_test.std
    )
    return folder, model.eval()


def test_explain_command_writes_maps_and_grid(saved, tmp_path):
    folder, _model = saved
    out = tmp_path / "explain"
    code = main(
        ["explain", "--model", str(folder), "--data", "shapes", "--images", "0:4",
         "--methods", "grad-cam,integrated-gradients", "--param", "steps=8", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    maps = np.load(out / "maps.npz")
    assert maps["grad-cam"].shape == (4, 32, 32)
    assert maps["integrated-gradients"].shape == (4, 32, 32)
    assert list(maps["indices"]) == [0, 1, 2, 3]
    assert (out / "grid.png").read_bytes()[:4] == b"\x89PNG"
    info = json.loads((out / "explain.json").read_text())
    assert info["methods"] == ["grad-cam", "integrated-gradients"]


def test_explain_command_errors(saved, tmp_path, capsys):
    folder, _model = saved
    args = ["explain", "--model", str(folder), "--out", str(tmp_path)]
    assert main([*args, "--methods", "grad-kam"]) == 2
    assert "grad-cam" in capsys.readouterr().err
    assert main([*args, "--images", "0:2", "--target", "99"]) == 2
    assert "target" in capsys.readouterr().err
    assert main([*args, "--images", "99999"]) == 2


def test_method_all_means_every_registered_method():
    assert method_names("all") == list(methods())  # as evaluate --methods all
    assert method_names("grad-cam, saliency,grad-cam") == ["grad-cam", "saliency"]
    with pytest.raises(InputError, match="grad-cam"):
        method_names("grad-kam")
    with pytest.raises(InputError, match="at least one method"):
        method_names(" , ")


@pytest.mark.slow
def test_explain_command_runs_all_methods(saved, tmp_path):
    folder, _model = saved
    out = tmp_path / "all"
    cheap = ["steps=4", "n_masks=50", "n_samples=20", "iterations=5"]
    params = [arg for p in cheap for arg in ("--param", p)]
    code = main(
        ["explain", "--model", str(folder), "--images", "0:1", "--methods", "all", *params,
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    maps = np.load(out / "maps.npz")
    info = json.loads((out / "explain.json").read_text())
    # relabel needs a VAE trained on the data; none is saved next to this model
    expected = [m for m in methods() if m != "relabel"]
    for name in expected:
        assert maps[name].shape == (1, 32, 32), name
    assert info["methods"] == expected
    assert "train-vae" in info["skipped"]["relabel"]


@pytest.mark.slow
def test_explain_all_skips_what_the_model_lacks(shapes_test, tmp_path, capsys):
    """LeNet-5 has no pooled linear head: 'all' skips CAM with the reason and runs the
    rest; naming CAM on purpose is an error."""
    torch.manual_seed(0)
    model = nets.create("lenet5", num_classes=len(shapes_test.classes), in_channels=3)
    folder = tmp_path / "lenet"
    checkpoint.save(
        model, folder, classes=shapes_test.classes, mean=shapes_test.mean, std=shapes_test.std
    )
    cheap = ["steps=4", "n_masks=50", "n_samples=20", "iterations=5"]
    params = [arg for p in cheap for arg in ("--param", p)]
    out = tmp_path / "all"
    args = ["explain", "--model", str(folder), "--images", "0:1", *params, "--out", str(out)]
    assert main([*args, "--methods", "all"]) == 0
    info = json.loads((out / "explain.json").read_text())
    assert "cam" in info["skipped"] and "cam" not in info["methods"]
    assert "cam: skipped" in capsys.readouterr().out
    maps = np.load(out / "maps.npz")
    assert set(info["methods"]) | set(info["skipped"]) == set(methods())
    for name in info["methods"]:
        assert maps[name].shape == (1, 32, 32), name
    assert main([*args, "--methods", "cam"]) == 2
    assert "error:" in capsys.readouterr().err


def test_parsers():
    assert parse_index("0:3,7", 10) == [0, 1, 2, 7]
    assert parse_index("0:10:4", 10) == [0, 4, 8]
    with pytest.raises(InputError):
        parse_index("a:b", 10)
    assert parse_params(["steps=8", "noise=0.1", "baseline=blur"]) == {
        "steps": 8,
        "noise": 0.1,
        "baseline": "blur",
    }
    with pytest.raises(InputError):
        parse_params(["steps"])


def test_explanations_section(saved, shapes_test, tmp_path):
    from cnnlens.attribution import get
    from cnnlens.report import ReportContext
    from cnnlens.report.sections.explanations import explanations

    _folder, model = saved
    test = shapes_test.subset(range(8))
    mine = sorted(m for m in methods() if (get(m).cost() or 99) <= 51)  # the known cheap ones
    options = {"explain_budget_s": 1e6, "explain_methods": mine}
    ctx = ReportContext(model=model, train=None, test=test, out=tmp_path, options=options)
    page = explanations(ctx)
    assert "<img" in page
    for name in mine:
        assert f"<td>{name}</td><td>shown</td>" in page, name
    # with no time left every registered method is still listed, none is run
    ctx = ReportContext(
        model=model, train=None, test=test, out=tmp_path, options={"explain_budget_s": 0.0}
    )
    page = explanations(ctx)
    for name in methods():
        assert f"<td>{name}</td>" in page
    assert "<td>shown</td>" not in page.replace("<td>saliency</td><td>shown</td>", "")


PERTURBATION = [
    "occlusion", "rise", "lime", "kernel-shap", "extremal-perturbation",
    "meaningful-perturbation", "iba",
]  # fmt: skip


def test_explain_command_runs_perturbation_methods(saved, tmp_path):
    """Each --param goes only to the methods that take it (n_masks to RISE, ...)."""
    folder, _model = saved
    out = tmp_path / "explain"
    params = ["n_masks=64", "n_samples=40", "iterations=4", "steps=2", "window=8", "stride=8"]
    args = ["explain", "--model", str(folder), "--data", "shapes", "--images", "0:3"]
    args += ["--methods", ",".join(PERTURBATION), "--out", str(out)]
    for p in params:
        args += ["--param", p]
    assert main(args) == 0
    maps = np.load(out / "maps.npz")
    for name in PERTURBATION:
        assert maps[name].shape == (3, 32, 32), name
        assert np.isfinite(maps[name]).all(), name
    assert (out / "grid.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_explanations_section_shows_perturbation_methods(saved, shapes_test, tmp_path):
    """At their default settings, with the time budget lifted, every part-2 method is shown."""
    from cnnlens.report import ReportContext
    from cnnlens.report.sections.explanations import explanations

    _folder, model = saved
    options = {"explain_budget_s": 1e6, "explain_methods": PERTURBATION}
    ctx = ReportContext(
        model=model, train=None, test=shapes_test.subset(range(8)), out=tmp_path, options=options
    )
    page = explanations(ctx)
    for name in PERTURBATION:
        assert f"<td>{name}</td><td>shown</td>" in page, name

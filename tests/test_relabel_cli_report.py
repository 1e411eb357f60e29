"""Re-label distillation from the shell and in the report: finding the VAE, the error
without one, the report section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cnnlens.studies.relabel.vae  # noqa: F401  (registers the conv-vae architecture)
from cnnlens import checkpoint, nets
from cnnlens.cli import main
from cnnlens.data import load
from cnnlens.errors import InputError


def _digits_model(folder):
    torch.manual_seed(0)
    model = nets.create("lenet5", num_classes=10, in_channels=1).eval()
    digits = load("digits", split="test")
    checkpoint.save(model, folder / "model", classes=digits.classes, mean=digits.mean,
                    std=digits.std, input_shape=(1, 32, 32))  # fmt: skip
    return digits


def _save_vae(folder, data, channels: int = 1):
    torch.manual_seed(1)
    vae = nets.create("conv-vae", in_channels=channels, image_size=32, latent=8, width=4)
    checkpoint.save(vae, folder / "model", mean=data.mean, std=data.std,
                    input_shape=(channels, 32, 32))  # fmt: skip


def test_explain_relabel_finds_the_vae_next_to_the_model(tmp_path, capsys):
    run = tmp_path / "run"
    digits = _digits_model(run)
    args = ["explain", "--model", str(run), "--data", "digits", "--index", "0:2",
            "--method", "relabel", "--param", "n=40", "--param", "steps=10"]  # fmt: skip
    # no VAE yet: one line saying how to get one, exit 2
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "cnnlens train-vae --data digits" in err and str(run / "vae-digits") in err
    _save_vae(run / "vae-digits", digits)
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    maps = np.load(tmp_path / "b" / "maps.npz")
    assert maps["relabel"].shape == (2, 32, 32)
    info = json.loads((tmp_path / "b" / "explain.json").read_text())
    assert info["methods"] == ["relabel"]
    # --vae elsewhere; a VAE for other images is named
    _save_vae(tmp_path / "rgb", load("shapes", split="test", n=4), 3)
    code = main([*args, "--vae", str(tmp_path / "rgb"), "--out", str(tmp_path / "c")])
    assert code == 2
    assert "3x32x32" in capsys.readouterr().err
    assert main([*args, "--vae", str(tmp_path / "none"), "--out", str(tmp_path / "d")]) == 2
    assert "train-vae" in capsys.readouterr().err


def test_train_vae_command_help(capsys):
    assert main(["train-vae", "--help"]) == 0
    assert "--latent" in capsys.readouterr().out
    assert main(["train", "--arch", "conv-vae", "--out", "/tmp/never-made"]) == 2


@pytest.mark.slow
def test_report_section(tmp_path):
    from cnnlens.report import ReportContext
    from cnnlens.report.sections.relabel import relabel

    test = load("shapes", split="test", n=8)
    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=len(test.classes)).eval()
    ctx = ReportContext(model=model, train=None, test=test, out=tmp_path, options={"quick": True})
    assert "cnnlens train-vae" in relabel(ctx)
    vae = nets.create("conv-vae", image_size=32, latent=8, width=4)
    options = {"quick": True, "vae": vae, "relabel_images": 3, "relabel_samples": 40}
    ctx = ReportContext(model=model, train=None, test=test, out=tmp_path, options=options)
    page = relabel(ctx)
    for name in ("relabel", "grad-cam", "occlusion", "random"):
        assert f"<td>{name}</td>" in page, name
    assert "<img" in page and "pointing game" in page
    assert 'alt="t-SNE of the relabelled samples' in page
    assert "share of y&#x27;=1" in page or "share of y'=1" in page
    assert not model.training


@pytest.mark.slow
def test_evaluate_relabel_uses_the_vae_next_to_the_model(tmp_path, capsys):
    run = tmp_path / "run"
    digits = _digits_model(run)
    args = ["evaluate", "--model", str(run), "--data", "digits", "--images", "2", "--methods",
            "relabel", "--metrics", "deletion", "--param", "relabel:n=20",
            "--sanity-images", "0"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "cnnlens train-vae --data digits" in capsys.readouterr().err
    _save_vae(run / "vae-digits", digits)
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "| relabel |" in capsys.readouterr().out


def test_relabelled_embedding_is_seeded_bounded_and_leaves_the_model():
    """Fig. 3's data: n points in 2-D with their labels y', the same for the same seed."""
    from cnnlens.hooks import model_fingerprint, same_fingerprint
    from cnnlens.studies.relabel.distiller import relabelled_embedding

    test = load("shapes", split="test", n=2)
    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=len(test.classes)).eval()
    vae = nets.create("conv-vae", image_size=32, latent=8, width=4).eval()
    x, _ = test.tensors([0])
    before = model_fingerprint(model)
    xy, hard, scale = relabelled_embedding(model, vae, x, n=40, probe=20, max_tries=2)
    assert same_fingerprint(before, model_fingerprint(model)) and not model.training
    assert xy.shape == (40, 2) and np.isfinite(xy).all() and scale > 0
    assert hard.shape == (40,) and set(hard.tolist()) <= {0, 1}
    again, hard2, _ = relabelled_embedding(model, vae, x, n=40, probe=20, max_tries=2)
    assert np.array_equal(again, xy) and torch.equal(hard2, hard)
    with pytest.raises(InputError, match="n must be an integer in"):
        relabelled_embedding(model, vae, x, n=2)

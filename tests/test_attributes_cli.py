"""``cnnlens attributes ...`` end to end on a tiny run, and its one-line errors."""

from __future__ import annotations

import json

import pytest

from cnnlens.cli import main

TINY = ["--size", "16", "--n-train", "48", "--n-test", "24", "--epochs", "1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("attributes-run")
    assert main(["attributes", "train", "--data", "shapes", "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.slow
def test_train_prune_robustness_predictability(tiny_run, tmp_path, capsys):
    run = tiny_run
    record = json.loads((run / "run.json").read_text())
    assert set(record["accuracy"]) >= {"red", "striped", "bright"}
    roles = json.loads((run / "roles.json").read_text())
    assert len(roles["mask_means"]) == 10 and len(roles["mask_means"][0]) == 128
    assert roles["construction_check"]["correlated_by_construction"]["red-warm"] is not None
    assert 0 <= roles["construction_check"]["p_larger"] <= 1
    for figure in ("mask_grid.png", "top_masks.png", "channel_correlation.png"):
        assert (run / figure).read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    # a second train reuses the run
    assert main(["attributes", "train", "--data", "shapes", "--out", str(run), *TINY]) == 0
    assert capsys.readouterr().out.startswith("reused")
    args = ["--run", str(run), "--images", "24"]
    assert main(["attributes", "prune", *args, "--seeds", "2", "--save", "0.5"]) == 0
    pruning = json.loads((run / "prune" / "pruning.json").read_text())
    assert pruning["curves"]["random"]["counts"] == [0, 32, 64, 96]
    assert (run / "prune" / "pruning.png").is_file()
    macs = list(pruning["macs_m"].values())
    assert macs == sorted(macs, reverse=True) and macs[-1] < macs[0] / 4
    assert json.loads((run / "prune" / "model" / "model.json").read_text())["arch"]["kwargs"][
        "channels"
    ] == [32, 64, 64, 64]
    assert main(["attributes", "robustness", *args, "--transforms", "1:0,2:0.2"]) == 0
    grid = json.loads((run / "robustness" / "robustness.json").read_text())
    assert (run / "robustness" / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert grid["transforms"] == [[1.0, 0.0], [2.0, 0.2]] and len(grid["stds"]) == 6
    assert main(["attributes", "predictability", *args, "--sizes", "16,64", "--repeats", "1"]) == 0
    scores = json.loads((run / "predictability" / "predictability.json").read_text())
    assert set(scores) == {"attention", "plain", "attention_minus_plain", "protocol"}
    assert set(scores["attention_minus_plain"]) == {"all", "mask", "prune"}
    assert len(scores["attention"]["interval"]) == 2
    assert "attention - plain (all points)" in capsys.readouterr().out
    assert (run / "plain" / "model" / "model.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "digits"], "no attributes"),
        (["robustness", "--transforms", "0:0.1"], "n > 0"),
        (["robustness", "--transforms", "-1:0"], "n > 0"),
        (["robustness", "--transforms", "2:1"], "beta in [0, 1)"),
        (["robustness", "--transforms", "2:-0.5"], "beta in [0, 1)"),
        (["robustness", "--transforms", "2"], "n:beta"),
        (["prune", "--prefer", "middle"], "--prefer"),
        (["prune", "--fractions", "0.5,1.5"], "(0, 1)"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    where = ["--out", str(tmp_path / "o")] if args[0] == "train" else ["--run", str(tmp_path)]
    code = main(["attributes", *args, *where])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_a_folder_that_is_no_run_is_named(tmp_path, capsys):
    assert main(["attributes", "prune", "--run", str(tmp_path)]) == 2
    assert "not an attribute-network run" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_training_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    """`attributes train --resume` continues from the last epoch a killed run saved and ends
    with the weights of a run that was never stopped."""
    from safetensors.torch import load_file

    import cnnlens.studies.channel_roles.training as training

    two_epochs = [*TINY[:-1], "2"]
    whole = tmp_path / "whole"
    assert main(["attributes", "train", "--data", "shapes", "--out", str(whole), *two_epochs]) == 0

    class Killed(Exception):
        pass

    def kill_in_epoch_2(epoch, model, record):  # before epoch 2 is saved
        if epoch == 2:
            raise Killed

    real_fit = training.fit

    def fit_killed_in_epoch_2(*args, **kwargs):
        return real_fit(*args, callbacks=[kill_in_epoch_2], **kwargs)

    killed = tmp_path / "killed"
    args = ["attributes", "train", "--data", "shapes", "--out", str(killed), *two_epochs]
    monkeypatch.setattr(training, "fit", fit_killed_in_epoch_2)
    with pytest.raises(Killed):
        training.attribute_run(data="shapes", out=killed, size=16, n_train=48, n_test=24, epochs=2)
    assert not (killed / "model").exists()
    assert json.loads((killed / "checkpoints" / "latest.json").read_text())["epoch"] == 1
    trained = []

    def fit_recording_epochs(*args, **kwargs):
        return real_fit(*args, callbacks=[lambda e, m, r: trained.append(e)], **kwargs)

    monkeypatch.setattr(training, "fit", fit_recording_epochs)
    assert main([*args, "--resume"]) == 0
    assert trained == [2]  # epoch 1 came from the checkpoint
    history = json.loads((killed / "run.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    a = load_file(str(whole / "model" / "model.safetensors"))
    b = load_file(str(killed / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_trains_on_a_celeba_folder(tmp_path, capsys):
    """`--data celeba:/path` reads CelebA's own files (here 5 small images) and trains on its
    attributes; the shapes construction check is absent for other attributes."""
    from helpers import CELEBA_ATTRS, write_celeba

    root = tmp_path / "celeba"
    root.mkdir()
    write_celeba(root)
    out = tmp_path / "run"
    args = ["attributes", "train", "--data", f"celeba:{root}", "--out", str(out)]
    assert main([*args, "--size", "16", "--epochs", "1"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert list(record["accuracy"]) == CELEBA_ATTRS and record["identity"]["n_train"] == 3
    roles = json.loads((out / "roles.json").read_text())
    assert roles["attribute_names"] == CELEBA_ATTRS and roles["construction_check"] is None
    assert "5_o_Clock_Shadow" in capsys.readouterr().out

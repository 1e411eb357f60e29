"""Gated training's callbacks (both phases) and the gated network's information plane."""

from __future__ import annotations

import json

import pytest
import torch

from cnnlens import checkpoint, nets
from cnnlens.cli import main
from cnnlens.errors import ConfigError
from cnnlens.studies.drib import gate, train_gated
from cnnlens.studies.drib.gated_plane import gated_plane, plane_summary
from cnnlens.studies.drib.information_plane import key_points
from cnnlens.studies.drib.training import GateRecipe


def _data(n=24, size=16, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_a_callback_sees_every_epoch_of_both_phases_with_its_phase():
    torch.manual_seed(0)
    g = gate(nets.create("resnet8", num_classes=3), masks=2)
    seen = []

    def spy(epoch, model, record):
        assert model is g
        seen.append((epoch, record["phase"], record["phase_epoch"], "train_loss" in record))
        return {"spy": epoch}

    recipe = GateRecipe(gate_epochs=2, finetune_epochs=3, batch_size=8, augment=())
    gating, finetune = train_gated(g, _data(), recipe=recipe, callbacks=[spy])
    assert seen == [
        (1, "gates", 1, True),
        (2, "gates", 2, True),
        (3, "fine-tune", 1, True),
        (4, "fine-tune", 2, True),
        (5, "fine-tune", 3, True),
    ]
    # what a callback returns lands in the phase's history, as with fit
    assert [r["spy"] for r in gating.history + finetune.history] == [1, 2, 3, 4, 5]
    assert [r["phase"] for r in finetune.history] == ["fine-tune"] * 3


def test_a_callback_that_is_not_callable_is_refused():
    g = gate(nets.create("resnet8", num_classes=3), masks=2)
    with pytest.raises(ConfigError, match="callable"):
        train_gated(g, _data(), recipe=GateRecipe(gate_epochs=1), callbacks=[3])


def test_the_gated_plane_runs_and_its_key_points_follow_its_trajectory():
    torch.manual_seed(0)
    g = gate(nets.create("resnet8", num_classes=3), masks=2)
    x, y = _data(32)
    plane = gated_plane(g, (x[:16], y[:16]), n=16, noise_variance=0.5)
    assert plane.layers == ["layer1", "layer2", "layer3"]
    recipe = GateRecipe(gate_epochs=2, finetune_epochs=2, batch_size=8, augment=())
    train_gated(g, (x, y), recipe=recipe, callbacks=[plane])
    result = plane_summary(plane, {1: "gates", 2: "gates", 3: "fine-tune", 4: "fine-tune"})
    epochs = sorted({p["epoch"] for p in result["points"]})
    assert epochs == [0, 1, 2, 3, 4]
    assert {p["phase"] for p in result["points"] if p["epoch"] == 3} == {"fine-tune"}
    assert len(result["key_points"]) == 3 * 2 * 2  # layers x estimators x (transition, conv.)
    for row in result["key_points"]:
        trajectory = plane.trajectory(row["layer"], row["estimator"])
        by_epoch = {p.epoch: p for p in trajectory}
        assert row["ixz"] == by_epoch[row["epoch"]].ixz  # a point of the trajectory
        if row["point"] == "transition":
            assert row["ixz"] == max(p.ixz for p in trajectory)
            assert row["epoch"] == min(p.epoch for p in trajectory if p.ixz == row["ixz"])
        else:  # from it on both quantities stay within 5 % of their range of the last value
            last = trajectory[-1]
            for q in ("ixz", "izy"):
                span = max(getattr(p, q) for p in trajectory) - min(
                    getattr(p, q) for p in trajectory
                )
                for p in trajectory:
                    if p.epoch >= row["epoch"]:
                        assert abs(getattr(p, q) - getattr(last, q)) <= 0.05 * span + 1e-12
            assert key_points(trajectory)["convergence"].epoch == row["epoch"]
    # measuring the plane (eval mode, no random draws) leaves the training unchanged
    torch.manual_seed(0)
    g2 = gate(nets.create("resnet8", num_classes=3), masks=2)
    train_gated(g2, (x, y), recipe=recipe)
    for (n1, p1), (n2, p2) in zip(g.state_dict().items(), g2.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2), n1


def test_drib_train_plane_writes_the_plane_and_its_figure(tmp_path, capsys):
    torch.manual_seed(0)
    from cnnlens.data import load

    test = load("shapes", split="test", n=8)
    base = nets.create("resnet8", num_classes=test.num_classes)
    checkpoint.save(base, tmp_path / "base", classes=test.classes, mean=test.mean, std=test.std)
    out = tmp_path / "run"
    args = ["drib", "train", "--model", str(tmp_path / "base"), "--data", "shapes"]
    args += ["--out", str(out), "--n-train", "32", "--n-test", "24", "--epochs", "1"]
    args += ["--finetune-epochs", "1", "--masks", "2", "--plane", "--plane-images", "16"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "transition at epoch" in text and (out / "plane.png").stat().st_size > 0
    plane = json.loads((out / "plane.json").read_text())
    assert sorted({p["epoch"] for p in plane["points"]}) == [0, 1, 2]
    assert {p["phase"] for p in plane["points"]} == {"start", "gates", "fine-tune"}
    assert plane["n"] == 16 and plane["layers"] == ["layer1", "layer2", "layer3"]
    assert json.loads((out / "run.json").read_text())["identity"]["plane"]["n"] == 16
    # reused as it is; a run without the plane is another run (refused without --overwrite)
    assert main(args) == 0
    assert "reused" in capsys.readouterr().out
    plain = [a for a in args if a not in ("--plane", "--plane-images", "16")]
    assert main(plain) == 2
    args_bad = [*args[:-3], "--plane", "--plane-layers", "layer9", "--overwrite"]
    assert main(args_bad) == 2

"""``cnnlens decompose`` end to end and the report section."""

from __future__ import annotations

import json

import pytest

from cnnlens import checkpoint
from cnnlens.cli import main


@pytest.mark.parametrize(
    "args,message",
    [
        (["--k1", "0"], "k1 must be an integer >= 1 or 'coverage'"),
        (["--k1", "most"], "--k1 must be an integer or 'coverage'"),
        (["--k1", "coverage", "--coverage", "1.5"], "coverage must be a number > 0 and <= 1"),
        (["--k2", "0"], "k2 must be an integer >= 1"),
    ],
)
def test_bad_k_is_one_line_exit_2_before_any_write(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code = main(["decompose", "--model", str(tmp_path), "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_decompose_command_writes_results(trained_shapes, tmp_path):
    model_dir = tmp_path / "net"
    checkpoint.save(
        trained_shapes.model,
        model_dir,
        classes=trained_shapes.train.classes,
        mean=trained_shapes.train.mean,
        std=trained_shapes.train.std,
    )
    out = tmp_path / "dec"
    code = main(
        [
            "decompose",
            "--model",
            str(model_dir),
            "--data",
            "shapes",
            "--sweep-k",
            "1,5",
            "--seeds",
            "1",
            "--retrain",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    for name in (
        "influential.json",
        "sweep.csv",
        "sweep.md",
        "sweep.png",
        "ablation.csv",
        "overlap.csv",
        "maps.png",
        "histograms.png",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    rel = summary["relative"]
    assert rel["r_A"] == pytest.approx(rel["A_d"] / rel["A_f"])
    assert set(summary["in_mask_energy"]) >= {"influential", "non_influential", "all"}
    facts = json.loads((out / "influential.json").read_text())
    assert len(facts["classes"]) == 8
    # the retrained decomposed classifier is saved and reopens with its accuracy
    import cnnlens
    from cnnlens.studies.decompose import DecomposedHead
    from cnnlens.train import evaluate

    net = cnnlens.load(out / "retrained")
    assert isinstance(net.head, DecomposedHead) and net.head.indices.shape == (8, 5)
    history = json.loads((out / "retrain.json").read_text())
    accuracy = evaluate(net, trained_shapes.test)["accuracy"]
    assert accuracy == pytest.approx(history[-1]["test_accuracy"], abs=1e-9)


def test_report_section(trained_shapes, tmp_path):
    from cnnlens.report import ReportContext, build_report

    ctx = ReportContext(
        model=trained_shapes.model,
        train=trained_shapes.train,
        test=trained_shapes.test,
        out=tmp_path,
        options={"quick": True},
    )
    page = build_report(ctx, tmp_path / "r.html", only=["class-filters"]).read_text()
    assert "Class-specific filters" in page and "r_A" in page
    assert 'class="error"' not in page


def test_decompose_depth_trains_once_then_reuses(tmp_path, capsys):
    """One line trains the depths, writes the table and plot; a second run reuses the nets."""
    args = ["decompose-depth", "--depths", "8,14", "--epochs", "1", "--images", "256"]
    args += ["--out", str(tmp_path)]
    assert main(args) == 0
    first = json.loads((tmp_path / "depth.json").read_text())
    assert [row["depth"] for row in first] == [8, 14]
    for row in first:
        assert row["run"].startswith("trained")
        assert row["r_A"] == pytest.approx(row["A_d"] / row["A_f"])
        assert row["k1"] == row["k2"] == round(row["m"] * 5 / 64)
    assert (tmp_path / "depth.png").stat().st_size > 0
    assert (tmp_path / "resnet8" / "model" / "model.json").is_file()
    capsys.readouterr()
    assert main(args) == 0
    second = json.loads((tmp_path / "depth.json").read_text())
    assert [row["run"] for row in second] == ["reused", "reused"]
    assert [row["r_A"] for row in second] == [row["r_A"] for row in first]

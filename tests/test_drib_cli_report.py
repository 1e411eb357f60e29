"""`cnnlens drib train|evaluate` and the "Dynamic channel gating" report section."""

from __future__ import annotations

import json

import pytest
import torch

from cnnlens import checkpoint, macs, nets
from cnnlens.cli import main
from cnnlens.plotting import COLUMN_PX, MIN_MAP_PX, MIN_TEXT_PX
from helpers import embedded_figures


@pytest.fixture(scope="module")
def drib_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("drib")
    torch.manual_seed(0)
    from cnnlens.data import load

    test = load("shapes", split="test", n=8)
    base = nets.create("resnet8", num_classes=test.num_classes)
    checkpoint.save(base, root / "base", classes=test.classes, mean=test.mean, std=test.std)
    out = root / "run"
    args = ["drib", "train", "--model", str(root / "base"), "--data", "shapes", "--out", str(out)]
    args += ["--n-train", "64", "--n-test", "200", "--epochs", "1", "--finetune-epochs", "1"]
    args += ["--masks", "3"]
    assert main(args) == 0
    return root, out


def test_train_writes_a_reusable_gated_run(drib_run, capsys):
    root, out = drib_run
    saved = json.loads((out / "run.json").read_text())
    ev = saved["evaluation"]
    assert ev["ungated"]["macs"] == macs(checkpoint.load(root / "base")).total
    assert ev["reduction_ratio"] == pytest.approx(
        100 * (ev["ungated"]["macs"] - ev["gated"]["macs"]) / ev["ungated"]["macs"]
    )
    assert len(saved["history"]["gating"]) == 1 and len(saved["history"]["finetune"]) == 1
    stamp = (out / "model" / "model.safetensors").stat().st_mtime_ns
    args = ["drib", "train", "--model", str(root / "base"), "--data", "shapes", "--out", str(out)]
    args += ["--n-train", "64", "--n-test", "200", "--epochs", "1", "--finetune-epochs", "1"]
    args += ["--masks", "3"]
    assert main(args) == 0
    assert "reused" in capsys.readouterr().out
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == stamp


def test_evaluate_writes_the_chosen_parts(drib_run, capsys):
    _root, out = drib_run
    args = ["drib", "evaluate", "--run", str(out), "--parts", "macs,usage,latency"]
    assert main([*args, "--n-test", "64", "--quick"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert set(result) >= {"macs", "usage", "latency"} and "credibility" not in result
    assert result["macs"]["n_test"] == 64
    assert [row["batch"] for row in result["latency"]] == [1, 64]
    assert "reduction" in capsys.readouterr().out
    # a second call adds its parts to the same file; the first call's parts stay
    assert main([*args[:-1], "usage", "--n-test", "64", "--quick"]) == 0
    again = json.loads((out / "evaluation.json").read_text())
    assert again["macs"] == result["macs"] and again["latency"] == result["latency"]
    assert set(again["seconds"]) == {"macs", "usage", "latency"}
    # measured on other test images: the earlier file is kept beside the new one
    assert main([*args[:-1], "macs", "--n-test", "32", "--quick"]) == 0
    assert "kept as" in capsys.readouterr().out
    assert json.loads((out / "evaluation.json").read_text())["macs"]["n_test"] == 32
    kept = json.loads((out / "evaluation.previous.json").read_text())
    assert kept["macs"]["n_test"] == 64 and "latency" in kept
    # a second mismatch keeps both earlier files: nothing is overwritten
    assert main([*args[:-1], "macs", "--n-test", "48", "--quick"]) == 0
    assert json.loads((out / "evaluation.previous.json").read_text()) == kept
    second = json.loads((out / "evaluation.previous-2.json").read_text())
    assert second["macs"]["n_test"] == 32


def test_evaluate_prints_each_attribution_row_method_first(drib_run, capsys, tmp_path):
    """Table 5 rows read 'iba  decline 2x2: ...', also when printed from a merged file."""
    _root, out = drib_run
    args = ["drib", "evaluate", "--run", str(out), "--n-test", "16", "--quick"]
    args += ["--out", str(tmp_path)]
    methods = ("iba", "smoothgrad", "grad-cam", "guided-grad-cam")
    for parts in ("attribution", "usage"):  # the second call prints the merged rows
        assert main([*args, "--parts", parts]) == 0
        lines = capsys.readouterr().out.splitlines()
        rows = [line for line in lines if "bbox:" in line]
        assert [row.split()[0] for row in rows] == list(methods), rows


@pytest.mark.parametrize(
    "args, message",
    [
        (["--parts", "macs,nonsense"], "--parts takes"),
        (["--masks", "2"], "No such option"),
    ],
)
def test_evaluate_bad_input_is_one_line(drib_run, args, message, capsys):
    _root, out = drib_run
    code = main(["drib", "evaluate", "--run", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_evaluate_without_a_run_says_so(tmp_path, capsys):
    assert main(["drib", "evaluate", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no run.json") and len(err.splitlines()) == 1


@pytest.mark.slow
def test_report_section_shows_tables_and_legible_heatmaps(drib_run):
    from cnnlens.data import load
    from cnnlens.report import ReportContext
    from cnnlens.report.sections.drib import drib_section
    from cnnlens.studies.drib.runs import GatedRun, load_gated

    root, out = drib_run
    saved = json.loads((out / "run.json").read_text())
    run = GatedRun(load_gated(out / "model"), saved["history"], saved["evaluation"], True, 0, out)
    base = checkpoint.load(root / "base")
    test = load("shapes", split="test", n=32)
    train = load("shapes", split="train", n=64)
    baseline = {"method": "L1 filter pruning", "macs": 1e6, "accuracy": 0.5}
    ctx = ReportContext(
        model=base,
        train=train,
        test=test,
        out=out,
        options={"quick": True, "drib_run": run, "drib_base": base, "drib_baselines": [baseline]},
    )
    page = drib_section(ctx)
    for text in (
        "Reduction ratio",
        "credibility",
        "Table 5",
        "L1 filter pruning",
        "sparse",
        "Wang",
    ):
        assert text in page
    figures = embedded_figures(page)
    assert len(figures) == 2
    for fig in figures:
        assert (fig["width"], fig["height"]) == fig["png_size"], fig["alt"]
        assert fig["width"] <= COLUMN_PX and fig["text_px"] >= MIN_TEXT_PX, fig
        assert fig["map_px"] is None or fig["map_px"] >= MIN_MAP_PX, fig
    stamp = (out / "report-cache.json").stat().st_mtime_ns
    assert drib_section(ctx) == page  # a second report reads the cache
    assert (out / "report-cache.json").stat().st_mtime_ns == stamp


def test_train_help_credits_wang_et_al_for_the_loss_and_head(capsys):
    """Paper 000 gives no loss or head design: the help says whose they are."""
    try:
        code = main(["drib", "train", "--help"])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr().out
    text = " ".join("".join(" " if c in "│╭╮╰╯─" else c for c in out).split())
    assert code == 0
    assert "Wang et al. 2020" in text and "paper 000 gives" in text
    assert "the paper's" not in text

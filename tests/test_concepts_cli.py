"""``cnnlens inspect concepts`` and the report's Concepts section, end to end on a small
saved model and a few ``shapes`` images."""

from __future__ import annotations

import json

import torch

from cnnlens import nets, plotting
from cnnlens.cli import main
from cnnlens.data import load
from cnnlens.report import ReportContext, build_report
from helpers import embedded_figures
from test_inspect_cli import _saved


def test_inspect_concepts_writes_json_figure_and_a_reusable_store(tmp_path, capsys):
    model = _saved(tmp_path / "m")
    out = tmp_path / "concepts"
    args = ["inspect", "concepts", "--model", str(model), "--layer", "layer2", "--n", "24"]
    args += ["--top", "3", "--channels", "4,7", "--out", str(out)]
    assert main(args) == 0
    result = json.loads((out / "concepts.json").read_text())
    assert result["layer"] == "layer2" and result["seen"] == 24 and result["shown"] == [4, 7]
    assert len(result["channels"]) == 32  # every channel of the layer, in the JSON
    row = result["channels"][4]
    for ranking in ("relevance", "activation"):
        assert len(row[ranking]["images"]) == 3 and len(row[ranking]["boxes"]) == 3
        assert row[ranking]["values"] == sorted(row[ranking]["values"], reverse=True)
    assert result["named"] and set(row["dissection"]) == {"concept", "iou", "detector"}
    assert (out / "concepts.png").stat().st_size > 0
    assert "layer2 #4" in capsys.readouterr().out
    stamp = (out / "references" / "references.json").stat().st_mtime_ns
    assert main(args) == 0  # a rerun reuses the finished store
    assert (out / "references" / "references.json").stat().st_mtime_ns == stamp
    assert main([*args[:-1], str(tmp_path / "bad"), "--layer", "nope"]) == 2
    bad = [*args[:-4], "--channels", "99", "--out", str(tmp_path / "bad2")]
    assert main(bad) == 2
    assert "not a channel" in capsys.readouterr().err


def test_report_section_shows_concepts_legibly(tmp_path):
    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=8).eval()
    test = load("shapes", split="test", n=40)
    ctx = ReportContext(model=model, train=None, test=test, out=tmp_path, options={"quick": True})
    page = build_report(ctx, tmp_path / "report.html", only=["concepts"]).read_text()
    assert "This section failed" not in page
    assert "Concept Relevance" in page and "by network dissection" in page
    figures = embedded_figures(page)
    assert len(figures) == 2
    for fig in figures:
        assert (fig["width"], fig["height"]) == fig["png_size"]
        assert fig["width"] <= plotting.COLUMN_PX
        assert fig["text_px"] >= plotting.MIN_TEXT_PX
        assert fig["map_px"] is None or fig["map_px"] >= plotting.MIN_MAP_PX


class Square(torch.nn.Module):
    """A product of two activations: LRP has no rule for it."""

    def forward(self, x):
        return x * x


def test_report_section_says_why_when_lrp_has_no_rule(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), Square(),
        torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Flatten(1),
        torch.nn.LazyLinear(8),
    ).eval()  # fmt: skip
    test = load("shapes", split="test", n=8)
    model(test.tensors([0])[0])
    ctx = ReportContext(model=model, train=None, test=test, out=tmp_path, options={"quick": True})
    page = build_report(ctx, tmp_path / "report.html", only=["concepts"]).read_text()
    assert "This section failed" not in page
    assert "Not shown: concept relevance needs LRP" in page


def test_inspect_concepts_discovers_and_links_to_tcav(tmp_path):
    model = _saved(tmp_path / "m")
    out = tmp_path / "concepts"
    args = ["inspect", "concepts", "--model", str(model), "--layer", "layer2", "--n", "16",
            "--top", "2", "--channels", "1,3", "--discover", "3", "--discover-method", "sae",
            "--concepts", "striped,filled", "--concept-images", "8", "--random", "2",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    result = json.loads((out / "concepts.json").read_text())
    found = result["discovered"]
    assert found["method"] == "sae" and found["k"] == 3 and found["error"] < found["initial_error"]
    assert len(found["importance"]) == 3 and len(found["references"]["images"]) == 3
    tcav = result["tcav"]
    assert tcav["concepts"] == ["striped", "filled"]
    assert [link["name"] for link in tcav["channels"]] == ["#1", "#3"]
    assert len(tcav["discovered"]) == 3
    for link in tcav["channels"] + tcav["discovered"]:
        assert link["concept"] in tcav["concepts"]
        assert link["cosine"] == max(link["cosines"].values()) and -1 <= link["cosine"] <= 1
        classes = load("shapes", split="test", n=4).classes
        assert link["tcav"] and set(link["tcav"]) <= set(classes)  # the classes in the images
    bad = [*args[:-2], "--discover-method", "pca", "--out", str(tmp_path / "bad")]
    assert main(bad) == 2 and not (tmp_path / "bad").exists()

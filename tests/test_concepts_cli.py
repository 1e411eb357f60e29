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


def _linked_rows(page: str) -> dict[int, tuple[str, float]]:
    """``{channel: (linked concept, cosine)}`` read from the section's channel table."""
    import re

    rows = re.findall(r"<tr><td>#(\d+)</td>.*?<td>([\w=]+) \((-?[\d.]+)\)</td>", page)
    return {int(c): (name, float(cos)) for c, name, cos in rows}


def _cosine(tcav, concept: str, channel: int, channels: int) -> float:
    """Mean cosine of the one-hot channel direction, repeated at every position, with the
    concept's CAVs, computed in the flattened activation space."""
    cosines = []
    for cav in tcav.cavs_[concept]:
        v = cav.vector.double().view(channels, -1)
        d = torch.zeros_like(v)
        d[channel] = 1.0
        cosines.append(float((v * d).sum() / (v.norm() * d.norm())))
    return sum(cosines) / len(cosines)


def test_report_section_links_the_shown_channels_to_tcav_concepts(tmp_path):
    from cnnlens.analysis import TCAV, shapes_concepts
    from cnnlens.report.sections.concepts import concepts

    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=8).eval()
    test = load("shapes", split="test", n=40)
    val = load("shapes", split="val", n=120)
    sets = shapes_concepts(val, ["red", "striped", "filled"], n=12)
    tcav = TCAV("layer3", n_random=2, random_size=12).fit(model, sets, random=val)
    result = tcav.score(model, test)
    # the internals section's TCAV at the section's layer (resnet8: layer3) is reused
    ctx = ReportContext(model=model, train=None, val=val, test=test, out=tmp_path,
                        options={"quick": True}, cache={"tcav": (tcav, result)})  # fmt: skip
    page = concepts(ctx)
    assert "Named by TCAV" in page and "the CAVs of the Model internals section" in page
    linked = _linked_rows(page)
    assert len(linked) == 4  # every shown channel
    channels = 64  # layer3 of resnet8
    for c, (name, cosine) in linked.items():
        best = max(tcav.concepts_, key=lambda k: _cosine(tcav, k, c, channels))
        assert name == best
        assert abs(cosine - _cosine(tcav, best, c, channels)) < 0.006  # printed to 2 places
    # a TCAV at another layer is not reused: the section fits its own at layer3
    other = TCAV("layer2", n_random=2, random_size=12).fit(model, sets, random=val)
    ctx = ReportContext(model=model, train=None, val=val, test=test, out=tmp_path,
                        options={"quick": True}, cache={"tcav": (other, result)})  # fmt: skip
    page = concepts(ctx)
    assert "CAVs fitted here" in page
    names = {name for name, _ in _linked_rows(page).values()}
    assert len(_linked_rows(page)) == 4 and names <= set(val.attribute_names[:3])
    # no concept sets: no link
    plain = ReportContext(model=model, train=None, test=test, out=tmp_path,
                          options={"quick": True})  # fmt: skip
    assert "Named by TCAV" not in concepts(plain)

"""The verdict per model (issue 33, item 4): intervals, outcomes against the baselines,
Kendall's tau between metrics, the recommendation per family, the CLI flag, the section."""

from __future__ import annotations

import json
import math

import pytest
import torch

import cnnlens
from cnnlens.metrics import registry
from cnnlens.metrics.evaluate import Evaluation
from cnnlens.metrics.verdict import bootstrap_cells, kendall_tau, verdict


def _draw(gen, mean, n, sd=0.05):
    return mean + sd * torch.randn(n, generator=gen)


def constructed(n=24, seed=0) -> Evaluation:
    """``strong`` is built to beat both baselines on faithfulness (deletion low, insertion
    high) and not on localisation (its pointing-game values are drawn like the baselines');
    ``weak`` loses on faithfulness; ``split`` beats on deletion and ties on insertion."""
    g = torch.Generator().manual_seed(seed)
    ev = Evaluation(images=list(range(n)))
    base = {"deletion": 0.4, "insertion": 0.5, "pointing-game": 0.5}
    ev.values = {
        "strong": {"deletion": _draw(g, 0.1, n), "insertion": _draw(g, 0.9, n),
                   "pointing-game": _draw(g, 0.5, n)},
        "weak": {"deletion": _draw(g, 0.7, n), "insertion": _draw(g, 0.2, n),
                 "pointing-game": _draw(g, 0.5, n)},
        "split": {"deletion": _draw(g, 0.1, n), "insertion": _draw(g, 0.5, n),
                  "pointing-game": _draw(g, 0.5, n)},
        "random": {k: _draw(g, v, n) for k, v in base.items()},
        "sobel": {k: _draw(g, v, n) for k, v in base.items()},
    }  # fmt: skip
    return ev


def test_a_method_built_to_beat_the_baselines_on_one_family_only():
    v = verdict(constructed())
    assert v.outcomes[("strong", "deletion")] == "beats"
    assert v.outcomes[("strong", "insertion")] == "beats"
    assert v.outcomes[("strong", "pointing-game")] == "ties"
    assert v.outcomes[("weak", "deletion")] == "loses"
    assert v.outcomes[("split", "deletion")] == "beats"
    assert v.outcomes[("split", "insertion")] == "ties"
    by_family = {r["family"]: r for r in v.recommendation}
    assert set(by_family) == {"faithfulness", "localisation"}
    faith, loc = by_family["faithfulness"], by_family["localisation"]
    assert faith["beats"] == ["strong"] and faith["loses"] == ["weak"]
    assert faith["mixed"] == ["split"] and "beats on deletion" in faith["evidence"]["split"]
    assert loc["beats"] == [] and "strong" in loc["ties"]
    # the evidence is the numbers: the method's interval and both baselines'
    cell = v.cells[("strong", "deletion")]
    assert f"{cell.mean:.3f} [{cell.low:.3f}, {cell.high:.3f}]" in faith["evidence"]["strong"]
    assert "random" in faith["evidence"]["strong"] and "sobel" in faith["evidence"]["strong"]
    assert "no method beats both baselines" in loc["text"]
    # no combined score anywhere
    assert not any("score" in key for key in v.to_dict()["cells"][0])


def test_families_come_from_the_registry():
    assert registry.get("deletion").family == "faithfulness"
    assert registry.get("pointing-game").family == "localisation"
    assert registry.get("randomisation").family == "randomisation"
    assert registry.family("randomisation-final") == "randomisation"
    assert registry.get("max-sensitivity").family == "robustness"
    assert all(registry.get(m).family in registry.FAMILIES for m in registry.names())
    with pytest.raises(cnnlens.InputError, match="family must be one of"):
        registry.Metric("x-y", "d", lambda job: {}, family="vibes")


def test_identical_metrics_give_tau_one_and_reversed_ones_minus_one():
    g = torch.Generator().manual_seed(1)
    n = 10
    ev = Evaluation(images=list(range(n)))
    means = {"a": 0.1, "b": 0.3, "c": 0.5, "random": 0.7, "sobel": 0.9}
    ev.values = {}
    for method, m in means.items():
        vals = _draw(g, m, n)
        # road and deletion: both lower is better, the same values: the same ranking;
        # insertion (higher is better) given the same values ranks the methods reversed
        ev.values[method] = {"deletion": vals, "road": vals.clone(), "insertion": vals.clone()}
    v = verdict(ev)
    i = {m: k for k, m in enumerate(v.metrics)}
    assert v.tau[i["deletion"]][i["road"]] == pytest.approx(1.0)
    assert v.tau[i["deletion"]][i["insertion"]] == pytest.approx(-1.0)
    assert ("deletion", "insertion", pytest.approx(-1.0)) in v.disagreements()


def test_kendall_tau_matches_scipy_with_ties():
    from scipy.stats import kendalltau

    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        a = torch.randint(0, 4, (9,), generator=g).double().tolist()
        b = torch.randint(0, 4, (9,), generator=g).double().tolist()
        ref = kendalltau(a, b).statistic
        got = kendall_tau(a, b)
        assert (math.isnan(ref) and math.isnan(got)) or got == pytest.approx(ref, abs=1e-12)


def test_bootstrap_intervals_are_reproducible_by_seed_and_sized_like_the_standard_error():
    g = torch.Generator().manual_seed(3)
    values = torch.randn(3, 400, generator=g, dtype=torch.float64)
    values[1, ::3] = math.nan  # missing values are left out, not counted as zeros
    values[2] = 0.25
    m1, lo1, hi1 = bootstrap_cells(values, seed=7)
    m2, lo2, hi2 = bootstrap_cells(values, seed=7)
    _, lo3, _ = bootstrap_cells(values, seed=8)
    assert torch.equal(lo1, lo2) and torch.equal(hi1, hi2) and torch.equal(m1, m2)
    assert not torch.equal(lo1, lo3)
    ok = values[1][~torch.isnan(values[1])]
    assert float(m1[1]) == pytest.approx(float(ok.mean()))
    for row, data in ((0, values[0]), (1, ok)):
        half = 1.96 * float(data.std()) / math.sqrt(data.numel())  # normal theory
        assert float(hi1[row] - lo1[row]) / 2 == pytest.approx(half, rel=0.15)
        assert float(lo1[row]) < float(m1[row]) < float(hi1[row])
    assert float(lo1[2]) == float(hi1[2]) == pytest.approx(0.25)
    # the verdict's cells are as reproducible
    a, b = verdict(constructed(), seed=5), verdict(constructed(), seed=5)
    assert a.cells == b.cells and a.to_dict() == b.to_dict()


def test_verdict_refuses_an_evaluation_without_the_baselines():
    ev = constructed()
    del ev.values["sobel"]
    with pytest.raises(cnnlens.InputError, match="no sobel"):
        verdict(ev)


def test_cli_evaluate_verdict_end_to_end(tmp_path, capsys):
    from cnnlens import checkpoint, nets
    from cnnlens.cli import main
    from cnnlens.data import load

    test = load("shapes", split="test")
    torch.manual_seed(0)
    checkpoint.save(nets.create("lenet5", num_classes=8, in_channels=3), tmp_path / "m",
                    classes=test.classes)  # fmt: skip
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(tmp_path / "m"), "--images", "4", "--methods", "saliency"]
    args += ["--metrics", "deletion,pointing-game", "--out", str(out), "--verdict"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "verdict.json").read_text())
    assert saved["methods"] == ["saliency", "random", "sobel"]
    assert {r["family"] for r in saved["recommendation"]} == {"faithfulness", "localisation"}
    assert saved["kendall_tau"]["metrics"] == ["deletion", "pointing-game"]
    for r in saved["recommendation"]:
        assert r["text"].replace("**", "") in printed
    cells = {(c["method"], c["metric"]): c for c in saved["cells"]}
    csv_rows = (out / "metrics.csv").read_text().splitlines()[1:]
    dels = [float(r.split(",")[3]) for r in csv_rows if r.split(",")[1:3] == ["saliency",
            "deletion"]]  # fmt: skip
    assert cells[("saliency", "deletion")]["mean"] == pytest.approx(sum(dels) / len(dels), 1e-5)
    text = (out / "verdict.md").read_text()
    assert "## Rank agreement" in text


def test_cli_evaluate_meta_end_to_end(tmp_path, capsys):
    """--meta meta-evaluates every scored metric on the command's model, images, methods."""
    from cnnlens import checkpoint, nets
    from cnnlens.cli import main
    from cnnlens.data import load

    test = load("shapes", split="test")
    torch.manual_seed(0)
    checkpoint.save(nets.create("lenet5", num_classes=8, in_channels=3), tmp_path / "m",
                    classes=test.classes)  # fmt: skip
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(tmp_path / "m"), "--images", "4", "--methods", "saliency"]
    args += ["--metrics", "pointing-game,completeness", "--out", str(out), "--verdict"]
    args += ["--meta", "--meta-perturbations", "1"]
    assert main(args) == 0
    assert "Meta-evaluation of pointing-game" in capsys.readouterr().out
    saved = json.loads((out / "verdict.json").read_text())
    text = (out / "verdict.md").read_text()
    # completeness is not scored for every method (not for the baselines): skipped
    meta = json.loads((out / "meta.json").read_text())
    assert [m["metric"] for m in meta] == ["pointing-game"]
    assert meta[0]["methods"] == ["saliency", "random", "sobel"]
    assert set(meta[0]["scores"]) == {"model", "input"}
    assert saved["meta"] == meta and "| pointing-game | model |" in text
    for space in meta[0]["scores"].values():
        mc = space["MC"]
        assert 0 <= mc["low"] <= mc["high"] <= 1 and 0 <= mc["mean"] <= 1


@pytest.mark.slow
def test_verdict_section_judges_the_faithfulness_sections_evaluation(shapes_test, tmp_path):
    from cnnlens import nets
    from cnnlens.hooks import model_fingerprint, same_fingerprint
    from cnnlens.report import ReportContext
    from cnnlens.report.sections.faithfulness import faithfulness, faithfulness_evaluation
    from cnnlens.report.sections.verdict import verdict_section

    torch.manual_seed(0)
    model = nets.create("lenet5", num_classes=8, in_channels=3).eval()
    fp = model_fingerprint(model)
    ctx = ReportContext(model=model, train=None, test=shapes_test.subset(range(6)), out=tmp_path,
                        options={"faithfulness_images": 6})  # fmt: skip
    faithfulness(ctx)
    ev = ctx.cache["faithfulness_evaluation"][0]
    page = verdict_section(ctx)
    assert faithfulness_evaluation(ctx)[0] is ev  # reused, not re-run
    v = verdict(ev)
    assert "Kendall" in page and "<table>" in page
    for line in v.lines():
        assert line.split("**")[1] in page  # every family's line is shown
    cell = v.cells[("saliency", "deletion")]
    assert f"{cell.mean:.3f}<br><small>[{cell.low:.3f}, {cell.high:.3f}]" in page
    assert "MetaQuantus" in page and "IAC<sub>NR</sub>" in page
    for space in ("model", "input"):  # the meta-evaluation table's rows
        assert f"<td>deletion</td><td>{space}</td>" in page
    assert same_fingerprint(fp, model_fingerprint(model))

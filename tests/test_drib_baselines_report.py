"""Report section "Pruning baselines and the information plane": drawn from a cached
measurement that a second report reuses; every figure follows the report's size rule."""

from __future__ import annotations

import dataclasses

import pytest

from cnnlens.plotting import COLUMN_PX, MIN_TEXT_PX
from cnnlens.report import ReportContext, build_report
from helpers import embedded_figures


@pytest.mark.slow
def test_section_prunes_measures_the_plane_and_reuses_its_cache(tmp_path):
    from cnnlens.data import load
    from cnnlens.train import OptimizerConfig, TrainConfig
    from cnnlens.train.classifier import train_classifier

    config = TrainConfig(
        epochs=1, batch_size=64, optimizer=OptimizerConfig(lr=0.05), augment=(), seed=0
    )
    run = train_classifier(data="digits", arch="resnet8", out=tmp_path / "run", config=config)
    test = load("digits", split="test")
    ctx = ReportContext(
        model=run.model,
        train=run.train,
        test=test,
        out=tmp_path,
        options={"quick": True, "drib_baselines": True},
    )
    page = build_report(ctx, tmp_path / "report.html", only=["drib-baselines"]).read_text()
    assert "Pruning baselines and the information plane" in page and 'class="error"' not in page
    for method in ("unpruned", "l1", "slimming", "fpgm", "taylor", "fbs"):
        assert f"<td>{method}</td>" in page
    assert "<td>dynamic</td>" in page and "latency (ms, batch" in page
    assert "noise variance 0.1" in page and "30 bins per unit" in page
    assert "transition" in page and "convergence" in page
    figures = embedded_figures(page)
    assert figures
    for fig in figures:
        assert (fig["width"], fig["height"]) == fig["png_size"], fig["alt"]
        assert fig["width"] <= COLUMN_PX and fig["text_px"] >= MIN_TEXT_PX, fig
    cache = tmp_path / "drib-baselines" / "report-cache.json"
    stamp = cache.stat().st_mtime_ns
    # a second report reads the cache; another model (or other settings) measures again
    again = dataclasses.replace(ctx, cache={})
    build_report(again, tmp_path / "report2.html", only=["drib-baselines"])
    assert cache.stat().st_mtime_ns == stamp
    # not asked for: no section (a user's report does not prune their model unasked)
    plain = dataclasses.replace(ctx, options={"quick": True}, cache={})
    page = build_report(plain, tmp_path / "report3.html", only=["drib-baselines"]).read_text()
    assert "Pruning baselines" not in page


@pytest.mark.parametrize(
    ("gated_reduction", "budget"),
    [(None, 50.0), (49.44, 49.4), (-0.0, 50.0), (3.0, 50.0)],
    ids=["no gated model", "gated budget", "gate saves nothing", "gate saves too little"],
)
def test_budget_is_the_gated_models_where_it_saves_enough(gated_reduction, budget):
    from types import SimpleNamespace

    from cnnlens.report.sections.drib_baselines import FULL, baseline_settings

    options = {}
    if gated_reduction is not None:  # the section reads only the run's evaluation
        options["drib_run"] = SimpleNamespace(evaluation={"reduction_ratio": gated_reduction})
    import torch

    images = (torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))
    ctx = ReportContext(model=None, train=None, test=images, out=".", options=options)
    settings = baseline_settings(ctx)
    assert settings["reduction"] == budget
    assert FULL["reduction"] == 50.0
    assert ("gated" in settings["budget_from"]) == (budget != 50.0)

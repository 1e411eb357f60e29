"""The report's "Channel roles and pruning" section on a tiny attribute run."""

from __future__ import annotations

import json

import pytest
import torch

from cnnlens import nets
from cnnlens.plotting import COLUMN_PX, MIN_TEXT_PX
from cnnlens.report import ReportContext, build_report
from cnnlens.report.attribute_figures import robustness_plot
from cnnlens.report.figures import figure_html
from cnnlens.report.sections.attributes import QUICK
from cnnlens.studies.channel_roles.robustness import TRANSFORMS
from cnnlens.studies.channel_roles.training import attribute_run
from helpers import embedded_figures


@pytest.mark.slow
def test_section_reads_the_run_and_caches_its_measurements(tmp_path):
    run = attribute_run(data="shapes", out=tmp_path / "attr", n_train=48, n_test=24, epochs=1)
    torch.manual_seed(0)
    ctx = ReportContext(
        model=nets.create("resnet8", num_classes=8).eval(),
        train=run.train,
        test=run.test,
        out=tmp_path,
        options={"quick": True, "attributes_run": tmp_path / "attr"},
    )
    page = build_report(ctx, tmp_path / "r.html", only=["attributes"]).read_text()
    assert "Channel roles and pruning" in page and "This section failed" not in page
    assert "Mann-Whitney U: p = " in page  # shapes' built-in correlations, tested
    for name in (
        "mean mask per attribute and channel",
        "top channels",
        "pruning curves",
        "accuracy under input noise",
    ):
        assert f'alt="{name}' in page
    figures = embedded_figures(page)
    assert len(figures) == 5
    cache = json.loads((tmp_path / "attr" / "report-cache.json").read_text())
    assert cache["key"]["settings"]["fractions"] == [0.5]
    assert list(cache["result"]["curves"]["random"]["counts"]) == [0, 64]
    grid = cache["result"]["robustness"]
    assert grid["stds"] == QUICK["noise_stds"] and len(grid["transforms"]) == len(TRANSFORMS)
    # a second report reads the cache (the result is not measured again)
    (tmp_path / "attr" / "report-cache.json").write_text(
        json.dumps(
            {
                **cache,
                "result": {
                    **cache["result"],
                    "correlation_table": "| a | b |\n|---|---|\n| x | marker-from-cache |",
                },
            }
        )
    )
    page = build_report(ctx, tmp_path / "r2.html", only=["attributes"]).read_text()
    assert "marker-from-cache" in page


def test_section_is_absent_without_an_attribute_run(tmp_path):
    torch.manual_seed(0)
    ctx = ReportContext(
        model=nets.create("resnet8", num_classes=8).eval(),
        train=None,
        test=(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)),
        out=tmp_path,
    )
    page = build_report(ctx, tmp_path / "r.html", only=["attributes"]).read_text()
    assert "Channel roles and pruning" not in page


def test_robustness_plot_draws_one_legible_line_per_transformation():
    """Fig. 8 of paper 003 from a grid's JSON: a line per (n, beta), y = mean accuracy in %."""
    stds = [0.0, 0.25, 0.5]
    mean = [[0.9, 0.8, 0.6], [0.9, 0.85, 0.7], [0.88, 0.86, 0.8]]
    grid = {"transforms": [[1.0, 0.0], [2.0, 0.0], [4.0, 0.5]], "stds": stds}
    grid["mean_accuracy"] = mean
    fig = robustness_plot(grid)
    lines = fig.axes[0].get_lines()
    assert [list(line.get_xdata()) for line in lines] == [stds] * 3
    for line, row in zip(lines, mean, strict=True):
        assert list(line.get_ydata()) == pytest.approx([100 * a for a in row])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("none") and labels[2] == "n=4, β=0.5"
    (shown,) = embedded_figures(figure_html(fig, "accuracy under input noise"))
    assert (shown["width"], shown["height"]) == shown["png_size"]
    assert shown["width"] <= COLUMN_PX and shown["text_px"] >= MIN_TEXT_PX

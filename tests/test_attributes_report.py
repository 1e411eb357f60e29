"""The report's "Channel roles and pruning" section on a tiny attribute run."""

from __future__ import annotations

import json

import pytest
import torch

from cnnlens import nets
from cnnlens.attributes.training import attribute_run
from cnnlens.report import ReportContext, build_report
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
    for name in ("mean mask per attribute and channel", "top channels", "pruning curves"):
        assert f'alt="{name}' in page
    figures = embedded_figures(page)
    assert len(figures) == 4
    cache = json.loads((tmp_path / "attr" / "report-cache.json").read_text())
    assert cache["key"]["settings"]["fractions"] == [0.5]
    assert list(cache["result"]["curves"]["random"]["counts"]) == [0, 64]
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

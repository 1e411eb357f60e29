"""Every kind of figure the report embeds reads at 100 % zoom (cnnlens.plotting's rule)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlens import plotting
from cnnlens.attribution import methods
from cnnlens.metrics.evaluate import Evaluation
from cnnlens.metrics.outputs import curve_figure
from cnnlens.report import figures as F
from cnnlens.report.dissection_figures import interpretability_chart, top_images_figure
from cnnlens.report.sections.explanations import family, family_grids
from cnnlens.studies.decompose import plots
from helpers import embedded_figures

CLASSES = ["circle", "square", "triangle", "star", "cross", "crescent", "arrow", "heart"]


def _dissection(n: int):
    """A network dissection of four layers of a CIFAR ResNet over ``n`` images, made up."""
    from cnnlens.analysis import DissectionResult, LayerDissection

    gen = torch.Generator().manual_seed(0)
    concepts = ["object", "background", *(f"class={c}" for c in CLASSES), "striped", "filled=0"]
    layers = [
        LayerDissection(
            name,
            concepts,
            0.04,
            torch.rand(c, generator=gen),
            0.1 * torch.rand(c, len(concepts), generator=gen, dtype=torch.float64),
            torch.full((c,), 0.005),
            torch.randint(0, n, (c, 8), generator=gen),
            torch.rand(c, 8, generator=gen),
            torch.rand(c, 8, side, side, generator=gen),
        )
        for name, c, side in (
            ("relu", 16, 32),
            ("layer1.0", 16, 32),
            ("layer2.2", 32, 16),
            ("layer3.2", 64, 8),
        )
    ]
    share = torch.rand(len(concepts), dtype=torch.float64)
    return DissectionResult(layers, concepts, share, 0.995, 0.04, "max", n, (32, 32))


def _images(n: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _report_figures() -> dict[str, str]:
    """HTML of each figure kind as the report's sections make it, on small fake data."""
    images = _images(32)
    k = len(CLASSES)
    boxes = torch.tensor([[4, 4, 20, 20]] * 32)
    predictions = [f"true crescent\npred triangle 0.{i:02d}" for i in range(32)]
    curves = {m: {"deletion": torch.rand(8, 17)} for m in ("saliency", "grad-cam", "random")}
    influential = {k: torch.rand(6, 1, 8, 8) for k in ("influential", "non_influential", "all")}
    figs = {
        "sample": F.image_grid(images[:16], CLASSES * 2, boxes=boxes[:16]),
        "predictions": F.image_grid(images, predictions, title_colors=["red"] * 32),
        "loss": F.line_plot({"train": [2, 1, 0.5], "validation": [2, 1.2, 0.7]}, xlabel="epoch",
                            ylabel="loss"),
        "confusion": F.confusion_plot(np.random.default_rng(0).integers(0, 300, (k, k)), CLASSES),
        "sweep": plots.sweep_heatmap([1, 2, 3, 5, 8, 10], [1, 2, 3, 5, 8, 10],
                                     torch.rand(6, 6), title="r_A over k1, k2"),
        "histograms": plots.histogram_plot(torch.rand(k, 64), CLASSES,
                                           torch.randint(0, 64, (k, 5))),
        "influential maps": plots.maps_grid(images[:6], influential, CLASSES[:6]),
        "deletion curves": curve_figure(Evaluation(images=list(range(8)), curves=curves),
                                        "deletion"),
    }  # fmt: skip
    dissected = _dissection(len(images))
    figs["dissection chart"] = interpretability_chart(dissected)
    figs["dissection top images"] = top_images_figure(
        dissected, (images, torch.zeros(32, dtype=torch.long))
    )
    out = {name: F.figure_html(fig, name) for name, fig in figs.items()}
    # the explanation grids with every registered method, as the section groups them
    maps = {name: torch.rand(8, 1, 32, 32) for name in methods()}
    out["explanations"] = family_grids(images[:8], maps, [f"{c} 0.97" for c in CLASSES])
    return out


@pytest.fixture(scope="module")
def report_figures() -> dict[str, str]:
    return _report_figures()


def test_every_report_figure_is_legible_at_native_size(report_figures):
    for kind, page in report_figures.items():
        shown = embedded_figures(page)
        assert shown, kind
        for fig in shown:
            where = f"{kind} / {fig['alt']}"
            # shown 1:1: the tag's size is the PNG's, and it fits the page's column
            assert (fig["width"], fig["height"]) == fig["png_size"], where
            assert fig["width"] <= plotting.COLUMN_PX, where
            assert fig["text_px"] >= plotting.MIN_TEXT_PX, where
            if fig["map_px"] is not None:
                assert fig["map_px"] >= plotting.MIN_MAP_PX, where


def test_explanation_grids_one_per_family_maps_at_full_size(report_figures):
    page = report_figures["explanations"]
    shown = embedded_figures(page)
    families = {family(name) for name in methods()}
    assert len(shown) == len(families) >= 4  # gradients, propagation, CAM, perturbation, ...
    for fig in shown:
        assert fig["map_px"] == pytest.approx(plotting.MAP_PX, abs=1)
        assert fig["text_px"] == pytest.approx(plotting.pt_to_px(plotting.TITLE_PT))


def test_render_measures_small_text_and_small_maps():
    """The measures can fail: 6 pt text and a 0.5 in map are reported."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2), dpi=plotting.DPI)
    ax.imshow(np.zeros((8, 8)))
    ax.set_position([0.0, 0.0, 0.25, 0.25])  # 50 x 50 px
    ax.set_title("tiny", fontsize=6)
    r = plotting.render(fig)
    assert r.text_px == pytest.approx(6 * plotting.DPI / 72)
    assert r.map_px == pytest.approx(50, abs=1)
    assert len(r.problems()) == 2
    # tick labels of an axes turned off are not drawn, so they do not count
    grid = F.CellGrid(1, 2, cell_px=100)
    grid.image(0, 0, np.zeros((4, 4)))
    grid.image(0, 1, np.zeros((8, 4)))  # fitted into the cell: 50 x 100 px
    grid.ax.tick_params(labelsize=4)
    r = plotting.render(grid.fig)
    assert r.text_px is None and r.map_px == pytest.approx(50, abs=1)
    assert r.problems() == ["maps of 50 px < 96 px"]


def test_page_shows_figures_at_native_size(tmp_path):
    from torch import nn

    from cnnlens.report import ReportContext, build_report

    # no section runs, so the page is just its frame and style sheet
    test = (torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))
    ctx = ReportContext(model=nn.Linear(1, 1), train=None, test=test, out=tmp_path)
    page = build_report(ctx, tmp_path / "r.html", only=[]).read_text()
    assert f"max-width: {plotting.COLUMN_PX}px" in page
    assert ".figure img { max-width: none; }" in page

"""RISE with fewer passes (issue 33, item 5): the convergence stop, Sobol and
antithetic masks. The default (no tolerance) must stay the paper's fixed count."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

import cnnlens
from cnnlens.attribution.rise import draw_masks, relative_standard_error, rise_masks
from cnnlens.errors import InputError


class Blob(nn.Module):
    """Class 0's logit is the mean of the input over a soft blob (class 1: zero), so
    RISE's map is the blob's shape: a smooth map with a known maximum."""

    def __init__(self) -> None:
        super().__init__()
        yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
        self.register_buffer("blob", torch.exp(-((yy - 5) ** 2 + (xx - 10) ** 2) / 8))
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 10 * ((x.mean(1) * self.blob).sum((1, 2)) / self.blob.sum() - 0.6)
        return torch.stack([score, torch.zeros_like(score)], 1)


def images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return 1 + 0.5 * torch.rand(n, 3, 16, 16, generator=g)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(spearmanr(a.flatten().numpy(), b.flatten().numpy())[0])


def test_default_is_the_fixed_count_formula():
    """No tolerance: sum_j P(x * M_j) M_j / (N p1) over all N masks, as before."""
    model, x = Blob(), images(2)
    e = cnnlens.explain(model, x, method="rise", n_masks=40, s=4, seed=5, target=0)
    assert "passes" not in e.extras
    g = torch.Generator().manual_seed(5)
    grids = (torch.rand(40, 4, 4, generator=g) < 0.5).float()
    shifts = torch.stack([torch.randint(0, 4, (40,), generator=g) for _ in range(2)], 1)
    masks = rise_masks(grids, shifts, (16, 16), (4, 4))
    probs = torch.softmax(torch.stack([model(x[i] * masks) for i in range(2)]), dim=2)[..., 0]
    expected = (probs[:, :, None, None] * masks[None, :, 0]).sum(1) / (40 * 0.5)
    torch.testing.assert_close(e.maps[:, 0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "options", [{}, {"sampling": "sobol"}, {"antithetic": True}], ids=["random", "sobol", "anti"]
)
def test_tolerance_spends_fewer_passes_and_agrees_with_the_full_count(options):
    model, x = Blob(), images(2)
    full = cnnlens.explain(model, x, method="rise", n_masks=2000, s=4, target=0).maps
    e = cnnlens.explain(
        model, x, method="rise", n_masks=2000, s=4, target=0, tolerance=0.3, block=32, **options
    )
    passes = e.extras["passes"]
    assert passes.shape == (2,) and (passes < 2000).all() and (passes >= 8 * 32).all()
    for i in range(2):
        assert corr(e.maps[i], full[i]) >= 0.9
    # a tighter tolerance never stops earlier
    tight = cnnlens.explain(
        model, x, method="rise", n_masks=2000, s=4, target=0, tolerance=0.1, block=32, **options
    )
    assert (tight.extras["passes"] >= passes).all()


def test_tolerance_is_seeded_and_per_image():
    model, x = Blob(), images(3)
    kw = dict(method="rise", n_masks=1000, s=4, target=0, tolerance=0.3, block=32, seed=2)
    a = cnnlens.explain(model, x, **kw)
    b = cnnlens.explain(model, x, **kw)
    assert torch.equal(a.maps, b.maps) and torch.equal(a.extras["passes"], b.extras["passes"])
    # an image's map and stop do not depend on the other images of the call
    alone = cnnlens.explain(model, x[2:], **kw)
    assert int(alone.extras["passes"][0]) == int(a.extras["passes"][2])
    torch.testing.assert_close(alone.maps[0], a.maps[2], rtol=1e-5, atol=1e-6)
    # nor on the chunk size
    small = cnnlens.explain(model, x, batch_size=7, **kw)
    assert torch.equal(small.extras["passes"], a.extras["passes"])
    torch.testing.assert_close(small.maps, a.maps, rtol=1e-5, atol=1e-6)
    other = cnnlens.explain(model, x, **{**kw, "seed": 3})
    assert not torch.equal(other.maps, a.maps)


def test_all_classes_with_tolerance():
    model, x = Blob(), images(2)
    e = cnnlens.explain(
        model,
        x,
        method="rise",
        n_masks=600,
        s=4,
        target=0,
        tolerance=0.05,
        block=32,
        all_classes=True,
    )
    torch.testing.assert_close(e.maps, e.extras["all_classes"][:, :1])
    # class probabilities sum to 1, so the class maps sum to mean(mask) / p1 ~ 1
    assert abs(float(e.extras["all_classes"].sum(1).mean()) - 1.0) < 0.1


def test_sobol_and_antithetic_masks():
    grids, shifts = draw_masks(64, 4, 0.5, (4, 4), 0, "sobol", False, torch.device("cpu"))
    assert set(grids.unique().tolist()) <= {0.0, 1.0} and grids.shape == (64, 4, 4)
    assert 0 <= int(shifts.min()) and int(shifts.max()) <= 3
    # a scrambled Sobol net keeps each cell in very nearly half of the masks
    assert (grids.mean(0) - 0.5).abs().max() <= 1 / 64 + 1e-9
    again, _ = draw_masks(64, 4, 0.5, (4, 4), 0, "sobol", False, torch.device("cpu"))
    other, _ = draw_masks(64, 4, 0.5, (4, 4), 1, "sobol", False, torch.device("cpu"))
    assert torch.equal(grids, again) and not torch.equal(grids, other)
    pairs, pshifts = draw_masks(10, 4, 0.5, (4, 4), 0, "random", True, torch.device("cpu"))
    torch.testing.assert_close(pairs[1::2], 1 - pairs[0::2])
    assert torch.equal(pshifts[1::2], pshifts[0::2])
    # the upsampled pair also sums to one (bilinear upsampling keeps constants)
    soft = rise_masks(pairs, pshifts, (16, 16), (4, 4))
    torch.testing.assert_close(soft[0::2] + soft[1::2], torch.ones_like(soft[0::2]))


def test_relative_standard_error():
    """Noise (batch-means SE, rms over pixels) over the map's spread without that noise."""
    y = torch.tensor([[0.0, 1.0], [0.0, 1.2], [0.0, 0.8]], dtype=torch.float64)
    sum_y, sum_y2 = y.sum(0, keepdim=True), (y**2).sum(0, keepdim=True)
    ratio = relative_standard_error(sum_y, sum_y2, 3)
    noise2 = (0 + y[:, 1].var() / 3) / 2  # pixel 0 never varies
    signal2 = torch.tensor([0.0, 1.0]).var(unbiased=False) - noise2
    assert float(ratio[0]) == pytest.approx(float((noise2 / signal2).sqrt()))
    # a unit-free ratio: scaling every block map leaves it unchanged
    scaled = relative_standard_error(7 * sum_y, 49 * sum_y2, 3)
    torch.testing.assert_close(scaled, ratio)
    # blocks that differ but agree on no pattern: no signal above the noise
    flat = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert relative_standard_error(flat.sum(0)[None], (flat**2).sum(0)[None], 2)[0] == torch.inf


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"tolerance": 0}, "tolerance"),
        ({"tolerance": 1.5}, "tolerance"),
        ({"tolerance": "small"}, "tolerance"),
        ({"sampling": "halton"}, "sampling"),
        ({"block": 1}, "block"),
        ({"antithetic": True, "p1": 0.3}, "p1 = 0.5"),
        ({"antithetic": True, "block": 33, "tolerance": 0.1}, "even block"),
    ],
)
def test_bad_settings_are_clear_errors(params, match):
    with pytest.raises(InputError, match=match):
        cnnlens.explain(Blob(), images(1), method="rise", n_masks=8, s=4, target=0, **params)


# --- LIME and Kernel SHAP: stop when the coefficients settle ----------------------------


@pytest.mark.parametrize("method", ["lime", "kernel-shap"])
def test_surrogate_tolerance_spends_fewer_samples_and_agrees(method):
    model, x = Blob(), images(3)
    kw = dict(method=method, n_samples=1500, segments="grid:4", target=0, seed=4)
    full = cnnlens.explain(model, x, **kw)
    assert "passes" not in full.extras
    e = cnnlens.explain(model, x, tolerance=0.05, block=50, **kw)
    spent = e.extras["passes"]
    assert (spent < 1500).all() and (spent >= 150).all()
    for i in range(3):
        assert corr(e.extras["coefficients"][i], full.extras["coefficients"][i]) >= 0.9
    # an image's coefficients and stop do not depend on the other images
    alone = cnnlens.explain(model, x[1:2], tolerance=0.05, block=50, **kw)
    assert int(alone.extras["passes"][0]) == int(spent[1])
    torch.testing.assert_close(alone.maps[0], e.maps[1], rtol=1e-4, atol=1e-5)
    # with every sample spent the fit is the fixed-count fit
    spent_all = cnnlens.explain(model, x, tolerance=1e-9, block=500, **kw)
    assert (spent_all.extras["passes"] == 1500).all()
    torch.testing.assert_close(spent_all.maps, full.maps, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tolerance", [0, 1.0, -0.1, "tight"])
def test_surrogate_bad_tolerance(tolerance):
    with pytest.raises(InputError, match="tolerance"):
        cnnlens.explain(
            Blob(), images(1), method="lime", n_samples=20, segments="grid:4", tolerance=tolerance
        )

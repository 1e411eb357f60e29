"""Agreement with Quantus 0.6 on the faithfulness group of issue 33.

Same model, images, maps and settings; Quantus moves each channel of a pixel on its own
while cnnlens moves pixels, so the comparisons run on one-channel images, where the two
coincide. Quantus' own normalisation (divide by the largest |a|) changes neither an
order nor a correlation. Tolerance: 1e-5 on float32 scores and correlations of them
(the same forwards in other batch compositions).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnlens.metrics.faithfulness_correlation import correlation_of_subsets
from cnnlens.metrics.faithfulness_estimate import faithfulness_estimate
from cnnlens.metrics.irof import irof
from cnnlens.metrics.monotonicity import monotonicity_arya, monotonicity_nguyen
from cnnlens.metrics.selectivity import selectivity

pytestmark = pytest.mark.numerics

quantus = pytest.importorskip("quantus")

TOL = 1e-5


class SmallCNN(nn.Module):
    def __init__(self, k=5, c=1, pool="max"):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(c, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, k)
        self.pool = pool

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(h.amax((2, 3)) if self.pool == "max" else h.mean((2, 3)))


def _case(size=16, pool="max"):
    g = torch.Generator().manual_seed(5)
    model = SmallCNN(pool=pool).eval()
    x = torch.randn(4, 1, size, size, generator=g)
    maps = torch.rand(4, 1, size, size, generator=g) - 0.3  # distinct values: no ties
    with torch.no_grad():
        y = model(x).argmax(1)
    kw = dict(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps.numpy(),
              device="cpu")  # fmt: skip
    return model, x, maps, y, kw


def test_faithfulness_correlation_on_quantus_subsets():
    """Quantus draws each image's subsets with ``np.random.choice``; the test draws the
    same ones (same seed, same calls) and scores them with cnnlens' core."""
    model, x, maps, y, kw = _case()
    runs, k = 20, 8
    np.random.seed(3)
    theirs = quantus.FaithfulnessCorrelation(
        nr_runs=runs, subset_size=k, perturb_baseline=0.0, return_aggregate=False,
        disable_warnings=True,
    )(**kw, softmax=False)  # fmt: skip
    np.random.seed(3)
    idx = np.stack(
        [
            np.stack([np.random.choice(256, k, replace=False) for _ in range(4)])
            for _ in range(runs)
        ],
        axis=1,
    )
    chosen = torch.zeros(4, runs, 256, dtype=torch.bool).scatter_(2, torch.from_numpy(idx), True)
    with torch.no_grad():
        f_x = model(x).gather(1, y[:, None])[:, 0]
    ours, _, _ = correlation_of_subsets(model, x, maps, y, f_x, chosen, baseline=0.0, score="logit")
    assert np.abs(ours.numpy() - np.asarray(theirs)).max() < TOL


def test_faithfulness_estimate_equals_quantus():
    model, x, maps, y, kw = _case()
    ours = faithfulness_estimate(model, x, maps, step=4, baseline=0.0)
    theirs = quantus.FaithfulnessEstimate(
        features_in_step=4, perturb_baseline=0.0, disable_warnings=True
    )(**kw, softmax=True)
    assert np.abs(ours.values.numpy() - np.asarray(theirs)).max() < TOL


def test_monotonicity_arya_differs_from_quantus_which_never_restores_the_image():
    """Quantus ``Monotonicity.evaluate_batch`` (metrics/faithfulness/monotonicity.py, line
    350) perturbs ``x_baseline`` with the baseline value, so the image never comes back,
    every curve is flat and every map is 'monotonic'. With a perturbation that puts the
    image's features back (AIX360's and the paper's step) its loop agrees with cnnlens.

    Linear model, logit score, baseline 0: images with only positive contributions are
    monotonic for any order, images with mixed ones are not."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    with torch.no_grad():
        model[1].weight.abs_()
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.rand(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)])
    maps = torch.rand(4, 1, 8, 8, generator=g)
    y = np.zeros(4, dtype=int)
    ours = monotonicity_arya(model, x, maps, 0, step=4, score="logit")
    assert ours.values.tolist() == [1.0, 1.0, 0.0, 0.0]
    kw = dict(model=model, x_batch=x.numpy(), y_batch=y, a_batch=maps.numpy(), device="cpu")
    stock = quantus.Monotonicity(features_in_step=4, perturb_baseline=0.0, disable_warnings=True)
    assert list(stock(**kw, softmax=False)) == [True] * 4
    flat = x.numpy().reshape(4, -1)

    def restore(arr, indices, **_):
        out = arr.copy()
        rows = np.arange(arr.shape[0])[:, None]
        out[rows, indices] = flat[rows, indices]
        return out

    fixed = quantus.Monotonicity(
        features_in_step=4, perturb_baseline=0.0, perturb_func=restore, disable_warnings=True
    )
    assert [float(v) for v in fixed(**kw, softmax=False)] == ours.values.tolist()


def test_monotonicity_nguyen_with_a_fixed_fill_equals_quantus():
    """A fixed fill (0, one sample) makes both deterministic. Mean pooling: every group
    moves the score, so no change ties at zero (under max pooling most groups change
    nothing and the ranks of exact zeros depend on float rounding of the batch)."""
    model, x, maps, y, kw = _case(pool="mean")
    ours = monotonicity_nguyen(model, x, maps, step=4, samples=1, baseline=0.0)
    theirs = quantus.MonotonicityCorrelation(
        features_in_step=4, nr_samples=1, perturb_baseline=0.0, disable_warnings=True
    )(**kw, softmax=True)
    assert np.abs(ours.values.numpy() - np.asarray(theirs)).max() < TOL


def test_irof_curve_equals_quantus(monkeypatch):
    """Quantus' ``calculate_auc`` (helpers/utils.py, line 1032) calls ``np.trapz``, gone
    in NumPy 2.4: the test gives NumPy the old name for Quantus' call. Quantus returns
    ``S - trapz(p_1..p_S)`` (``IROF.evaluate_batch``, line 388), cnnlens the normalised
    area over the curve; the curves are the same. Quantus' IROF needs one-channel images
    (``baseline_replacement_by_mask``, functions/perturb_func.py line 196, asserts the
    ``[N,1,H,W]`` mask has the image's shape)."""
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    model, x, maps, y, kw = _case(size=18)
    ours = irof(model, x, maps, baseline=0.0)
    theirs = np.asarray(
        quantus.IROF(perturb_baseline=0.0, return_aggregate=False, disable_warnings=True)(
            **kw, softmax=True
        )
    )
    curves, counts = ours.curves.double().numpy(), ours.extras["segments"].numpy()
    assert (counts > 10).all()
    as_quantus = [s - np.trapezoid(c[1 : s + 1]) for c, s in zip(curves, counts, strict=True)]
    assert np.abs(np.asarray(as_quantus) - theirs).max() < 1e-4 * counts.max()
    normalised = [1 - (1 / 2 + s - q + c[1] / 2) / s for c, s, q in zip(curves, counts, theirs)]
    assert np.abs(np.asarray(normalised) - ours.values.numpy()).max() < 1e-5


def test_selectivity_curve_equals_quantus():
    """18 px is not a multiple of the 4 px patch: the grid is centred as Quantus pads it."""
    model, x, maps, y, kw = _case(size=18)
    ours = selectivity(model, x, maps, patch=4, baseline=0.0)
    theirs = quantus.Selectivity(patch_size=4, perturb_baseline=0.0, disable_warnings=True)(
        **kw, softmax=True
    )
    assert ours.curves.shape == (4, 26)
    assert np.abs(ours.curves[:, 1:].numpy() - np.asarray(theirs)).max() < TOL

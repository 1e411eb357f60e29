"""Agreement with Quantus 0.6 (the peer implementation) on the shared metrics.

Quantus is a dev dependency installed without its torchvision-bound extras
(see the Makefile). Its AUC helper uses ``np.trapz`` (gone in NumPy 2.4), so
curves are compared directly. Tolerance: 1e-5 absolute on probabilities
(float32 forwards of the same images), exact equality on localisation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnlens import metrics

pytestmark = pytest.mark.numerics

quantus = pytest.importorskip("quantus")

TOL = 1e-5


class SmallCNN(nn.Module):
    def __init__(self, k=5, c=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(c, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, k)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(h.amax((2, 3)))


@pytest.fixture(scope="module")
def case():
    g = torch.Generator().manual_seed(5)
    model = SmallCNN().eval()
    x = torch.randn(4, 3, 16, 16, generator=g)
    maps = torch.rand(4, 1, 16, 16, generator=g) + 0.01  # distinct positive values: no ties
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, maps, y


def _np(t):
    return t.detach().cpu().numpy()


def test_pixel_flipping_equals_deletion_curve(case):
    # Quantus requires features_in_step to divide H*W while it counts channel-features, so a
    # pixel's channels cannot move together on RGB: compare on one-channel images.
    _, x3, maps, _ = case
    model = SmallCNN(c=1).eval()
    x = x3[:, :1].contiguous()
    with torch.no_grad():
        y = model(x).argmax(1)
    step = 4
    ours = metrics.deletion(model, x, maps, step=step)
    theirs = quantus.PixelFlipping(
        features_in_step=step,
        perturb_baseline=0.0,
        disable_warnings=True,
    )(model=model, x_batch=_np(x), y_batch=_np(y), a_batch=_np(maps), device="cpu", softmax=True)
    theirs = np.asarray(theirs)
    assert theirs.shape == (4, ours.curves.shape[1] - 1)
    assert np.abs(_np(ours.curves[:, 1:]) - theirs).max() < TOL
    auc = (theirs.sum(1) + _np(ours.curves[:, 0]) / 2 - theirs[:, -1] / 2) / theirs.shape[1]
    assert np.abs(_np(ours.values) - auc).max() < TOL


def test_region_perturbation_equals_morf(case):
    model, x, maps, y = case
    tile, regions = 4, 10
    ours = metrics.degradation(
        model, x, maps, tile=tile, fractions=torch.arange(regions + 1) / 16, baseline=0.0
    )
    theirs = quantus.RegionPerturbation(
        patch_size=tile,
        order="morf",
        regions_evaluation=regions,
        perturb_baseline=0.0,
        disable_warnings=True,
    )(model=model, x_batch=_np(x), y_batch=_np(y), a_batch=_np(maps), device="cpu", softmax=True)
    theirs = np.asarray(theirs)  # y_pred - y_pred_perturbed after each region
    morf = _np(ours.extras["morf"])
    assert np.abs((morf[:, :1] - morf[:, 1:]) - theirs).max() < TOL


def test_pointing_game_and_attribution_localisation_agree(case, shapes_test):
    x, _ = shapes_test.tensors(range(8))
    masks = shapes_test.masks[:8]
    g = torch.Generator().manual_seed(6)
    # maps that sometimes peak on the object and sometimes not
    boost = torch.rand(8, 1, 1, 1, generator=g) * 2 - 1  # object raised in some, lowered in others
    maps = torch.rand(8, 1, 32, 32, generator=g) + boost * masks.float()
    ours_pg = metrics.pointing_game(None, None, maps, masks=masks, tolerance=0)
    theirs_pg = quantus.PointingGame(disable_warnings=True)(
        model=None, x_batch=_np(x), y_batch=np.zeros(8, int), a_batch=_np(maps),
        s_batch=_np(masks).astype(float), device="cpu",
    )  # fmt: skip
    assert np.array_equal(_np(ours_pg.values), np.asarray(theirs_pg, dtype=np.float32))
    assert 0 < float(ours_pg.values.mean()) < 1  # both outcomes occur
    ours_e = metrics.energy_pointing_game(None, None, maps, masks=masks)
    theirs_e = quantus.AttributionLocalisation(
        abs=False, normalise=False, positive_attributions=True, disable_warnings=True
    )(
        model=None, x_batch=_np(x), y_batch=np.zeros(8, int), a_batch=_np(maps),
        s_batch=_np(masks).astype(float), device="cpu",
    )  # fmt: skip
    assert np.abs(_np(ours_e.values) - np.asarray(theirs_e)).max() < 1e-5

"""Metrics: known answers, literal ports of the reference loops, batching invariance, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import cnnlens
from cnnlens import metrics
from cnnlens.hooks import model_fingerprint, same_fingerprint
from cnnlens.metrics._common import auc
from cnnlens.metrics.causal import _gkern_2d


class OnePixel(nn.Module):
    """Logits (+v, -v) with v = 10 * x[0, py, px]: it only looks at one pixel."""

    def __init__(self, py: int, px: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(10.0))
        self.py, self.px = py, px

    def forward(self, x):
        v = self.w * x[:, 0, self.py, self.px]
        return torch.stack([v, -v], 1)


class TinyNet(nn.Module):
    def __init__(self, c=3, k=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(c, 6, 3, padding=1)
        self.head = nn.Linear(6, k)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def rise_single_run(model, img, explanation, *, mode, step, substrate_fn):
    """Literal port of eclique/RISE evaluation.CausalMetric.single_run (scores only)."""
    _, c, h, w = img.shape
    hw = h * w
    with torch.no_grad():
        pred = model(img).softmax(1)
    cl = int(pred.argmax(1))
    n_steps = (hw + step - 1) // step
    if mode == "del":
        start, finish = img.clone(), substrate_fn(img)
    else:
        start, finish = substrate_fn(img), img.clone()
    scores = np.empty(n_steps + 1)
    # stable descending order (RISE: np.flip(np.argsort(...)); identical without ties)
    salient_order = np.argsort(-explanation.reshape(-1, hw), axis=1, kind="stable")
    for i in range(n_steps + 1):
        with torch.no_grad():
            pred = model(start).softmax(1)
        scores[i] = float(pred[0, cl])
        if i < n_steps:
            coords = salient_order[:, step * i : step * (i + 1)]
            s = start.numpy().reshape(1, c, hw)
            s[0, :, coords] = finish.numpy().reshape(1, c, hw)[0, :, coords]
            start = torch.from_numpy(s.reshape(1, c, h, w))
    return scores


def test_auc_of_constant_curve_is_the_constant():
    assert torch.allclose(auc(torch.full((3, 17), 0.37)), torch.full((3,), 0.37))
    # a straight line from 1 to 0 has area 1/2
    assert torch.allclose(auc(torch.linspace(1, 0, 11)[None]), torch.tensor([0.5]))


def test_deletion_of_one_pixel_model_drops_at_exactly_that_step():
    h = w = 8
    model = OnePixel(5, 2)
    x = torch.ones(1, 3, h, w)
    maps = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(0))
    rank = int((maps.flatten() > maps[0, 0, 5, 2]).sum())  # position of the pixel in the order
    step = 3
    res = metrics.deletion(model, x, maps, step=step)
    drop_at = rank // step + 1
    y = res.curves[0]
    assert y.shape[0] == math.ceil(h * w / step) + 1
    assert torch.allclose(
        y[:drop_at], torch.full((drop_at,), float(torch.sigmoid(torch.tensor(20.0))))
    )
    assert torch.allclose(y[drop_at:], torch.full((y.shape[0] - drop_at,), 0.5))


def test_default_step_reproduces_drib_113_points():
    assert metrics.default_step(224, 224) == 448
    assert math.ceil(224 * 224 / 448) + 1 == 113
    assert metrics.default_step(32, 32) == 9


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_causal_metric_matches_literal_rise_port(mode):
    model = TinyNet().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 12, 12, generator=g)
    maps = torch.rand(3, 1, 12, 12, generator=g)
    fn = getattr(metrics, mode)
    res = fn(model, x, maps, step=7, batch_size=5)
    kern = _gkern_2d(11, 5.0)

    def blur(t):
        weight = torch.zeros(3, 3, 11, 11)
        for ch in range(3):
            weight[ch, ch] = kern
        return nn.functional.conv2d(t, weight, padding=5)

    for i in range(3):
        ref = rise_single_run(
            model,
            x[i : i + 1].clone(),
            maps[i].numpy(),
            mode="del" if mode == "deletion" else "ins",
            step=7,
            substrate_fn=torch.zeros_like if mode == "deletion" else blur,
        )
        assert np.allclose(res.curves[i].numpy(), ref, atol=1e-5)
        ref_auc = (ref.sum() - ref[0] / 2 - ref[-1] / 2) / (len(ref) - 1)
        assert abs(float(res.values[i]) - ref_auc) < 1e-5


def test_rise_kernel_matches_scipy_gkern():
    from scipy.ndimage import gaussian_filter

    d = np.zeros((11, 11))
    d[5, 5] = 1
    assert np.allclose(_gkern_2d(11, 5.0).numpy(), gaussian_filter(d, 5), atol=1e-7)
    assert abs(float(_gkern_2d(11, 5.0).sum()) - 1) < 1e-5


def test_batch_size_does_not_change_results_and_model_untouched():
    model = TinyNet()
    model.train()
    fp = model_fingerprint(model)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 10, 10, generator=g)
    maps = torch.randn(4, 1, 10, 10, generator=g)
    a = metrics.deletion(model, x, maps, batch_size=3)
    b = metrics.deletion(model, x, maps, batch_size=1000)
    assert torch.allclose(a.curves, b.curves, atol=1e-6)
    c = metrics.degradation(model, x, maps, tile=2, fractions=9, batch_size=4)
    d = metrics.degradation(model, x, maps, tile=2, fractions=9, batch_size=1000)
    assert torch.allclose(c.extras["morf"], d.extras["morf"], atol=1e-6)
    assert same_fingerprint(fp, model_fingerprint(model))


def test_degradation_matches_a_per_tile_loop():
    model = TinyNet().eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 9, 9, generator=g)  # 9 is not a multiple of the tile: partial tiles
    maps = torch.rand(2, 1, 9, 9, generator=g)
    tile, fr = 4, torch.tensor([0.0, 1 / 9, 4 / 9, 1.0])
    res = metrics.degradation(model, x, maps, tile=tile, fractions=fr)
    for i in range(2):
        tiles = []
        for ty in range(0, 9, tile):
            for tx in range(0, 9, tile):
                tiles.append((float(maps[i, 0, ty : ty + tile, tx : tx + tile].mean()), ty, tx))
        order = sorted(range(len(tiles)), key=lambda j: -tiles[j][0])
        mean = x[i].mean((1, 2), keepdim=True)
        cls = int(model(x[i : i + 1]).argmax())
        for name, seq in (("morf", order), ("lerf", order[::-1])):
            for s, f in enumerate(fr.tolist()):
                img = x[i].clone()
                for j in seq[: round(f * len(tiles))]:
                    _, ty, tx = tiles[j]
                    img[:, ty : ty + tile, tx : tx + tile] = mean.expand(
                        3, *img[:, ty : ty + tile, tx : tx + tile].shape[1:]
                    )
                with torch.no_grad():
                    p = float(model(img[None]).softmax(1)[0, cls])
                assert abs(float(res.extras[name][i, s]) - p) < 1e-5
    expected = (res.extras["lerf"] - res.extras["morf"]).mean(1)
    assert torch.allclose(res.values, expected)


def test_default_tiles_follow_the_papers_and_scale():
    assert metrics.default_tiles(224) == (8, 14)
    assert metrics.default_tiles(32) == (2, 4)


def test_map_equal_to_the_object_scores_one_on_localisation():
    masks = torch.zeros(3, 1, 16, 16, dtype=torch.bool)
    masks[0, 0, 2:6, 3:9] = True
    masks[1, 0, 10:16, 0:4] = True
    masks[2, 0, 7, 7] = True
    maps = masks.float()
    for fn in (metrics.bbox_score, metrics.pointing_game, metrics.energy_pointing_game):
        res = fn(None, None, maps, masks=masks)
        assert torch.equal(res.values, torch.ones(3)), fn.__name__
    # boxes are inclusive corners
    boxes = torch.tensor([[3, 2, 8, 5], [0, 10, 3, 15], [7, 7, 7, 7]])
    assert torch.equal(metrics.object_masks(maps, boxes=boxes), masks)
    assert torch.equal(metrics.bbox_score(None, None, maps, boxes=boxes).values, torch.ones(3))


def test_localisation_partial_answers():
    masks = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    masks[0, 0, 0, 0:5] = True
    masks[0, 0, 1, 0:2] = True  # 7 pixels
    maps = torch.zeros(1, 1, 10, 10)
    maps[0, 0, 0, 0:3] = 3.0  # 3 inside
    maps[0, 0, 9, 0:4] = 2.0  # 4 outside, less salient
    maps[0, 0, 5, 5] = -7.0  # negative energy is ignored
    assert float(metrics.bbox_score(None, None, maps, masks=masks).values) == pytest.approx(3 / 7)
    assert float(metrics.energy_pointing_game(None, None, maps, masks=masks).values) == (
        pytest.approx(9 / 17)
    )
    far = torch.zeros(1, 1, 10, 10)
    far[0, 0, 4, 1] = 1.0  # 3 rows below the object
    pg = metrics.pointing_game
    assert float(pg(None, None, far, masks=masks, tolerance=2).values) == 0.0
    assert float(pg(None, None, far, masks=masks, tolerance=3).values) == 1.0
    assert pg(None, None, far, masks=masks).params["tolerance"] == 1  # 15 px at 224 -> 1 at 10
    big = torch.ones(1, 1, 10, 10, dtype=torch.bool)
    assert math.isnan(float(metrics.bbox_score(None, None, maps, masks=big, max_area=0.33).values))


def test_spearman_and_ssim_match_scipy_and_skimage():
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(4)
    a = torch.randint(0, 5, (3, 1, 12, 12), generator=g).float()  # many ties
    b = a + torch.rand(3, 1, 12, 12, generator=g) * 3
    rho = metrics.spearman(a, b)
    s = metrics.ssim(a, b)
    for i in range(3):
        assert float(rho[i]) == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten())[0], 1e-5)
        na = (a[i, 0] - a[i].min()) / (a[i].max() - a[i].min())
        nb = (b[i, 0] - b[i].min()) / (b[i].max() - b[i].min())
        ref = structural_similarity(na.double().numpy(), nb.double().numpy(), data_range=1.0)
        assert float(s[i]) == pytest.approx(ref, abs=1e-5)


def test_completeness_is_zero_for_an_exact_linear_decomposition():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 4, bias=True))
    x = torch.randn(5, 3, 6, 6)
    target = torch.tensor([0, 1, 2, 3, 0])
    w = lin[1].weight.detach().view(4, 3, 6, 6)[target]
    expl = cnnlens.Explanation(
        maps=(w * x).sum(1, keepdim=True), target=target, method="x", raw=w * x
    )
    res = metrics.completeness(lin, x, expl)
    assert res.values.max() < 1e-4
    res2 = metrics.completeness(lin, x, expl.maps * 2, target=target)
    assert res2.values.min() > 1e-3


def test_baselines_are_deterministic_and_sobel_finds_edges():
    x = torch.zeros(2, 3, 8, 8)
    x[:, :, :, 4:] = 1.0
    assert torch.equal(metrics.random_map(x, seed=3), metrics.random_map(x, seed=3))
    s = metrics.sobel_map(x)
    assert s.shape == (2, 1, 8, 8)
    assert float(s[0, 0, 4, 0]) == 0 and float(s[0, 0, 4, 4]) > 0


def test_bad_inputs_raise_clear_errors():
    model = TinyNet()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(cnnlens.InputError, match=r"\[N,1,H,W\]"):
        metrics.deletion(model, x, torch.rand(2, 8, 8))
    with pytest.raises(cnnlens.InputError, match="do not match"):
        metrics.deletion(model, x, torch.rand(3, 1, 8, 8))
    with pytest.raises(cnnlens.InputError, match="step"):
        metrics.deletion(model, x, torch.rand(2, 1, 8, 8), step=0)
    with pytest.raises(cnnlens.TargetError):
        metrics.insertion(model, x, torch.rand(2, 1, 8, 8), target=9)
    with pytest.raises(cnnlens.InputError, match="exactly one"):
        metrics.bbox_score(None, None, torch.rand(2, 1, 8, 8))
    with pytest.raises(cnnlens.InputError, match="boxes"):
        metrics.pointing_game(None, None, torch.rand(2, 1, 8, 8), boxes=torch.zeros(3, 4))
    with pytest.raises(cnnlens.InputError, match="NaN"):
        metrics.energy_pointing_game(
            None, None, torch.full((2, 1, 8, 8), float("nan")), masks=torch.ones(2, 1, 8, 8)
        )
    with pytest.raises(cnnlens.InputError, match="method"):
        metrics.randomisation_check(model, x, torch.rand(2, 1, 8, 8))


def test_result_rows_mean_and_ci():
    r = metrics.Result("m", torch.tensor([1.0, float("nan"), 3.0]))
    assert r.mean == 2.0
    assert r.ci95 == pytest.approx(1.96 * math.sqrt(2) / math.sqrt(2))
    rows = r.to_rows(method="saliency", images=[10, 11, 12])
    assert rows[2] == {"image": 12, "method": "saliency", "metric": "m", "value": 3.0}

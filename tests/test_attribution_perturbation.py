"""Part 2 attribution methods: occlusion, RISE, LIME, Kernel SHAP, extremal and
meaningful perturbation, information bottleneck — against Captum and against
properties that must hold."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

import cnnlens
from cnnlens import nets
from cnnlens.attribution.bottleneck import LayerStatistics, estimate_statistics
from cnnlens.errors import InputError
from cnnlens.hooks import capture_outputs, model_fingerprint, same_fingerprint


def tiny_net(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    ).eval()


def smooth_images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size // 4, size // 4, generator=g)
    return nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


SMALL = {
    "occlusion": {"window": 4, "stride": 2},
    "rise": {"n_masks": 64, "s": 4},
    "lime": {"n_samples": 40, "segments": "grid:4"},
    "kernel-shap": {"n_samples": 40, "segments": "grid:4"},
    "extremal-perturbation": {"iterations": 4},
    "meaningful-perturbation": {"iterations": 4},
    "iba": {"steps": 2, "samples": 3, "layer": "2"},
}


# --- contract: registry, no trace, determinism, errors ------------------------------------


@pytest.mark.parametrize("method", sorted(SMALL))
def test_no_trace_and_deterministic(method):
    model = tiny_net()
    model.train()  # a method must give it back in train mode with the same flags
    model[0].weight.requires_grad_(False)
    x = smooth_images(3)
    before = model_fingerprint(model)
    a = cnnlens.explain(model, x, method=method, seed=3, **SMALL[method])
    b = cnnlens.explain(model, x, method=method, seed=3, **SMALL[method])
    assert same_fingerprint(before, model_fingerprint(model))
    assert a.maps.shape == (3, 1, 16, 16) and a.maps.dtype == torch.float32
    assert torch.isfinite(a.maps).all()
    assert torch.equal(a.maps, b.maps)
    assert a.method == method and a.params["seed"] == 3


@pytest.mark.parametrize("method", ["rise", "lime", "kernel-shap", "meaningful-perturbation"])
def test_seed_changes_sampled_methods(method):
    model, x = tiny_net(), smooth_images(2)
    a = cnnlens.explain(model, x, method=method, seed=0, **SMALL[method])
    b = cnnlens.explain(model, x, method=method, seed=1, **SMALL[method])
    assert not torch.equal(a.maps, b.maps)


def test_no_trace_when_a_method_raises():
    model = tiny_net()
    before = model_fingerprint(model)
    with pytest.raises(InputError, match="statistics are for layer"):
        stats = LayerStatistics("0", torch.zeros(8, 16, 16), torch.ones(8, 16, 16), 2)
        cnnlens.explain(model, smooth_images(2), method="iba", layer="2", statistics=stats)
    assert same_fingerprint(before, model_fingerprint(model))


@pytest.mark.parametrize(
    "method, params, match",
    [
        ("occlusion", {"window": 0}, "window"),
        ("occlusion", {"window": 40}, "larger than the images"),
        ("occlusion", {"window": 2, "stride": 3}, "must not exceed the window"),
        ("occlusion", {"baseline": "zero"}, "baseline"),
        ("rise", {"p1": 1.5}, "p1"),
        ("rise", {"n_masks": -1}, "n_masks"),
        ("lime", {"segments": "voronoi"}, "segments"),
        ("kernel-shap", {"segments": "grid:0"}, "grid"),
        ("extremal-perturbation", {"area": 1.2}, "area"),
        ("extremal-perturbation", {"variant": "both"}, "variant"),
        ("meaningful-perturbation", {"iterations": 0}, "iterations"),
        ("iba", {"layer": "nope"}, "nope"),
        ("iba", {"beta": -1}, "beta"),
        ("rise", {"masks": 10}, "no hyperparameter .masks. .did you mean .n_masks"),
    ],
)
def test_bad_hyperparameters_raise_input_errors(method, params, match):
    with pytest.raises(cnnlens.errors.CnnlensError, match=match):
        cnnlens.explain(tiny_net(), smooth_images(1), method=method, **params)


# --- occlusion ----------------------------------------------------------------------------


@pytest.mark.parametrize("window, stride", [(4, 4), (6, 4), (5, 3)])
def test_occlusion_equals_captum(window, stride):
    from captum.attr import Occlusion

    model = nets.create("resnet8", num_classes=5).eval()
    x = smooth_images(2, size=32, seed=1)
    ours = cnnlens.explain(model, x, method="occlusion", window=window, stride=stride, target=2)
    ref = Occlusion(model).attribute(
        x,
        sliding_window_shapes=(3, window, window),
        strides=(3, stride, stride),
        target=2,
        baselines=0.0,
        perturbations_per_eval=64,
    )
    torch.testing.assert_close(ours.raw, ref, atol=1e-5, rtol=1e-5)


def test_occlusion_one_pixel_window_on_linear_model_is_input_times_weight():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 3)).eval()
    x = torch.randn(2, 3, 6, 6)
    e = cnnlens.explain(model, x, method="occlusion", window=1, target=1, baseline=0.0)
    expected = (x * model[1].weight[1].view(3, 6, 6)).sum(1, keepdim=True)
    torch.testing.assert_close(e.maps, expected, atol=1e-5, rtol=1e-5)


# --- RISE ---------------------------------------------------------------------------------


class RegionModel(nn.Module):
    """Class 0's logit depends only on the mean of rows 4..11, cols 20..27."""

    def forward(self, x):
        region = x[:, :, 4:12, 20:28].mean(dim=(1, 2, 3))
        return torch.stack([12 * (region - 0.5), torch.zeros_like(region)], 1)


def test_rise_puts_its_maximum_in_the_only_region_the_model_sees():
    model = RegionModel()
    model.dummy = nn.Parameter(torch.zeros(1))  # the device comes from a parameter
    x = torch.ones(2, 3, 32, 32)
    e = cnnlens.explain(model, x, method="rise", n_masks=500, s=8, target=0)
    flat = e.maps.flatten(1).argmax(1)
    rows, cols = flat // 32, flat % 32
    assert ((rows >= 4) & (rows < 12) & (cols >= 20) & (cols < 28)).all()
    inside = e.maps[:, :, 4:12, 20:28].mean()
    outside = e.maps[:, :, 16:, :16].mean()
    assert inside > outside + 0.02


def test_rise_all_classes_come_from_the_same_passes():
    model, x = tiny_net(), smooth_images(2)
    e = cnnlens.explain(model, x, method="rise", n_masks=64, s=4, all_classes=True, target=1)
    both = e.extras["all_classes"]
    assert both.shape == (2, 4, 16, 16)
    torch.testing.assert_close(e.maps, both[:, 1:2])
    # probabilities sum to 1, so the class maps sum to mean(mask) / p1 ~ 1
    assert abs(float(both.sum(1).mean()) - 1.0) < 0.1


# --- LIME and Kernel SHAP -----------------------------------------------------------------


def _captum_surrogate(model, x, target, labels, coalitions, method):
    """Captum's Lime on the same segments and coalitions (and the same kernel)."""
    from captum._utils.models.linear_model import SkLearnLinearRegression, SkLearnRidge
    from captum.attr import Lime

    m = int(labels.max()) + 1

    def coalition_stream(_inputs, **_kw):
        if method == "kernel-shap":  # Captum's KernelShap starts with these two
            yield torch.ones(1, m, dtype=torch.long)
            yield torch.zeros(1, m, dtype=torch.long)
        for z in coalitions:
            yield z[None].long()

    if method == "lime":

        def similarity(_o, _p, z, **_kw):
            distance = 1 - torch.sqrt(z.sum().float() / m)
            return torch.sqrt(torch.exp(-(distance**2) / 0.25**2))

        surrogate = SkLearnRidge(alpha=1.0)
    else:

        def similarity(_o, _p, z, **_kw):  # KernelShap's weights
            return torch.tensor([1e6 if int(z.sum()) in (0, m) else 1.0])

        surrogate = SkLearnLinearRegression()
    lime = Lime(model, interpretable_model=surrogate, similarity_func=similarity,
                perturb_func=coalition_stream)  # fmt: skip
    n = len(coalitions) + (2 if method == "kernel-shap" else 0)
    return lime.attribute(
        x, target=target, baselines=0.0, feature_mask=labels[None, None], n_samples=n,
        perturbations_per_eval=32, return_input_shape=False,
    )[0]  # fmt: skip


@pytest.mark.parametrize("method", ["lime", "kernel-shap"])
def test_surrogates_agree_with_captum_on_the_same_coalitions(method, shapes_test):
    from cnnlens.attribution._perturb import generator
    from cnnlens.attribution.segments import sample_coalitions, segment

    model = nets.create("resnet8", num_classes=8).eval()
    x, _ = shapes_test.tensors([0, 1])
    n_samples = 100
    e = cnnlens.explain(model, x, method=method, n_samples=n_samples, seed=5, segments="slic")
    labels, valid = segment(x, "slic")
    assert torch.equal(labels, e.extras["segments"])
    for i in range(2):
        m = int(valid[i].sum())
        # an image's coalitions come from the seed and its segment count alone
        one = torch.ones(1, m, dtype=torch.bool)
        z = sample_coalitions(one, n_samples, generator(x.device, 5), shapley=method != "lime")
        ref = _captum_surrogate(model, x[i : i + 1], int(e.target[i]), labels[i], z[0], method)
        ours = e.extras["coefficients"][i, :m]
        # stated bound: Spearman >= 0.99 (LIME is the same ridge; Captum's KernelShap
        # approximates the two exact constraints with weight 1e6)
        assert spearmanr(ours.numpy(), ref.numpy()).statistic >= 0.99
        assert (ours - ref).abs().max() <= 1e-2 * ours.abs().max()


def test_surrogates_evaluate_each_distinct_coalition_once():
    from cnnlens.attribution._perturb import generator
    from cnnlens.attribution.segments import sample_coalitions, segment

    model = tiny_net()
    x = smooth_images(3)
    explain = lambda: cnnlens.explain(  # noqa: E731
        model, x, method="kernel-shap", segments="grid:3", n_samples=150
    )
    explain()  # the chunk size's memory probe is made once, here
    seen = []
    handle = model.register_forward_hook(lambda _m, i, _o: seen.append(len(i[0])))
    try:
        e = explain()
    finally:
        handle.remove()
    _labels, valid = segment(x, "grid:3")
    # every image has 9 segments, so all three get the coalitions drawn for 9
    z = sample_coalitions(valid[:1], 150, generator(x.device, 0), shapley=True)[0]
    distinct = 3 * len({tuple(row.tolist()) for row in z})
    assert distinct < 3 * 150  # 9 segments: many coalitions are drawn more than once
    assert sum(seen) == distinct + 2 * 3  # + the logits and the empty coalition per image
    with torch.no_grad():
        full = model(x).gather(1, e.target[:, None])[:, 0]
        empty = model(torch.zeros_like(x)).gather(1, e.target[:, None])[:, 0]
    torch.testing.assert_close(e.extras["coefficients"].sum(1), full - empty, atol=1e-4, rtol=1e-4)


def _exact_shapley(model, x, base, labels, target):
    m = int(labels.max()) + 1
    subsets = torch.tensor(list(itertools.product([0, 1], repeat=m)), dtype=torch.float32)
    keep = subsets[:, labels.flatten()].view(-1, 1, *labels.shape)
    with torch.no_grad():
        values = model(torch.where(keep.bool(), x, base))[:, target]
    index = {tuple(s.int().tolist()): v for s, v in zip(subsets, values)}
    phi = torch.zeros(m)
    for s, v in index.items():
        k = sum(s)
        for j in range(m):
            if s[j] == 0:
                with_j = list(s)
                with_j[j] = 1
                w = math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m)
                phi[j] += w * (index[tuple(with_j)] - v)
    return phi


def test_kernel_shap_enumerating_all_coalitions_gives_exact_shapley_values():
    model = tiny_net()
    x = smooth_images(2, size=12)
    labels = (torch.arange(12)[:, None] // 6) * 3 + torch.arange(12)[None] // 4  # 2 x 3 blocks
    e = cnnlens.explain(model, x, method="kernel-shap", segments=labels, n_samples=62, target=3)
    for i in range(2):
        exact = _exact_shapley(model, x[i], torch.zeros_like(x[i]), labels, 3)
        torch.testing.assert_close(e.extras["coefficients"][i], exact, atol=1e-4, rtol=1e-4)


def test_kernel_shap_sums_to_the_score_difference(shapes_test):
    model = tiny_net(8)
    x, _ = shapes_test.tensors([2, 3, 4])
    e = cnnlens.explain(model, x, method="kernel-shap", n_samples=100)
    with torch.no_grad():
        full = model(x).gather(1, e.target[:, None])[:, 0]
        empty = model(torch.zeros_like(x)).gather(1, e.target[:, None])[:, 0]
    torch.testing.assert_close(e.extras["coefficients"].sum(1), full - empty, atol=1e-3, rtol=1e-4)
    # the map paints each segment's value on its pixels
    seg = e.extras["segments"]
    assert torch.equal(
        e.maps[:, 0], e.extras["coefficients"].gather(1, seg.flatten(1)).view_as(seg)
    )


def test_surrogates_with_fewer_samples_than_segments(shapes_test):
    """Fewer distinct coalitions than segments: the normal equations are singular, and
    Kernel SHAP (and LIME without a ridge) give the minimum-norm solution, not an error;
    Kernel SHAP still sums to f(x) - f(baseline)."""
    model = tiny_net(8)
    x, _ = shapes_test.tensors([2, 3])
    e = cnnlens.explain(model, x, method="kernel-shap", n_samples=6, segments="grid:4")
    assert torch.isfinite(e.maps).all()
    with torch.no_grad():
        full = model(x).gather(1, e.target[:, None])[:, 0]
        empty = model(torch.zeros_like(x)).gather(1, e.target[:, None])[:, 0]
    torch.testing.assert_close(e.extras["coefficients"].sum(1), full - empty, atol=1e-3, rtol=1e-4)
    lime = cnnlens.explain(model, x, method="lime", n_samples=6, segments="grid:4", alpha=0.0)
    assert torch.isfinite(lime.maps).all()


def test_minimum_norm_solution_of_singular_normal_equations():
    from cnnlens.attribution.lime_shap import solve_normal_equations

    a = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # rank 1
    good = torch.tensor([[2.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    rhs = torch.tensor([[2.0, 2.0], [2.0, 8.0]], dtype=torch.float64)
    out = solve_normal_equations(torch.stack([a, good]), rhs)
    torch.testing.assert_close(out[0], torch.tensor([1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(out[1], torch.tensor([1.0, 2.0], dtype=torch.float64))


def test_segments_grid_and_label_tensor():
    from cnnlens.attribution.segments import segment

    x = smooth_images(2, size=16)
    labels, valid = segment(x, "grid:4")
    assert labels.shape == (2, 16, 16) and valid.shape == (2, 16) and valid.all()
    assert labels[0, 0, 0] == 0 and labels[0, 15, 15] == 15 and labels[0, 3, 4] == 1
    given = torch.zeros(16, 16, dtype=torch.long)
    given[:, 8:] = 7  # labels need not be contiguous
    labels, valid = segment(x, given)
    assert valid.shape == (2, 2) and set(labels.unique().tolist()) == {0, 1}


# --- extremal and meaningful perturbation -------------------------------------------------


@pytest.mark.parametrize("area", [0.1, 0.3])
def test_extremal_mask_area_matches_the_requested_area(area):
    model, x = tiny_net(), smooth_images(2, size=20)
    e = cnnlens.explain(model, x, method="extremal-perturbation", area=area, iterations=250)
    assert e.maps.min() >= 0 and e.maps.max() <= 1
    assert (e.maps.flatten(1).mean(1) - area).abs().max() < 0.03
    assert ((e.maps > 0.5).float().flatten(1).mean(1) - area).abs().max() < 0.03


@pytest.mark.parametrize("method", ["extremal-perturbation", "meaningful-perturbation"])
def test_mask_optimisation_batched_over_images_equals_one_by_one(method):
    model, x = tiny_net(), smooth_images(3)
    params = {"iterations": 20, "noise": 0.0} if method.startswith("meaningful") else {
        "iterations": 20}  # fmt: skip
    together = cnnlens.explain(model, x, method=method, **params)
    alone = cnnlens.explain(model, x, method=method, batch_size=1, **params)
    torch.testing.assert_close(together.maps, alone.maps, atol=1e-4, rtol=1e-4)


def test_extremal_pyramid_keeps_the_image_at_mask_one():
    from cnnlens.attribution.extremal import Pyramid

    x = smooth_images(2)
    pyramid = Pyramid(x, 8, 2.0)
    torch.testing.assert_close(pyramid.apply(torch.ones(2, 1, 16, 16)), x)
    torch.testing.assert_close(pyramid.apply(torch.zeros(2, 1, 16, 16)), pyramid.levels[:, 0])


# --- information bottleneck ---------------------------------------------------------------


def test_welford_statistics_match_torch_and_are_stored(tmp_path):
    model = tiny_net()
    images = smooth_images(37)
    with torch.no_grad(), capture_outputs(model, ["2"]) as store:
        model(images)
    direct = store["2"]
    path = tmp_path / "stats.safetensors"
    stats = estimate_statistics(model, "2", images, batch_size=5, path=path)
    torch.testing.assert_close(stats.mean, direct.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.std, direct.std(0).clamp_min(0.01), atol=1e-5, rtol=1e-5)
    assert stats.count == 37 and path.is_file()
    again = estimate_statistics(model, "2", images[:3], path=path)  # loaded, not recomputed
    assert again.count == 37 and torch.equal(again.mean, stats.mean)
    e = cnnlens.explain(model, images[:2], method="iba", layer="2", statistics=str(path), steps=2)
    assert e.maps.shape == (2, 1, 16, 16)


def test_iba_beta_zero_keeps_everything_and_large_beta_removes_everything():
    model = nets.create("resnet8", num_classes=4).eval()
    x = smooth_images(3, size=32)
    stats = estimate_statistics(model, "layer2", smooth_images(64, size=32, seed=9))
    keep = cnnlens.explain(model, x, method="iba", layer="layer2", beta=0.0, statistics=stats)
    drop = cnnlens.explain(model, x, method="iba", layer="layer2", beta=1e3, statistics=stats)
    cap_keep, cap_drop = keep.extras["capacity"], drop.extras["capacity"]
    assert cap_keep.shape == (3, 32, 16, 16)
    # beta = 0: most of the signal passes (lambda stays high, >= 1 bit per element on average)
    assert (cap_keep.flatten(1).mean(1) / math.log(2) > 1.0).all()
    assert (keep.extras["lambda"].flatten(1).mean(1) > 0.5).all()
    # large beta: (almost) nothing passes anywhere (lambda ~ 0 everywhere; the capacity
    # left is (lambda r)^2 / 2, a few outlying elements with huge |r| keep a little)
    assert (drop.extras["lambda"] < 0.05).all()
    assert (cap_drop.flatten(1).mean(1) < 0.01).all()
    assert (cap_drop.flatten(1).sum(1) < 0.01 * cap_keep.flatten(1).sum(1)).all()
    # the map holds the same number of bits as the capacity
    torch.testing.assert_close(
        keep.maps.flatten(1).sum(1), cap_keep.flatten(1).sum(1) / math.log(2), rtol=1e-4, atol=1e-3
    )

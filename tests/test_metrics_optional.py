"""Optional metrics: max-sensitivity, infidelity (Yeh et al. 2019) and ROAD (Rong et al. 2022).

Peers: Captum 0.9 ``infidelity`` and ``sensitivity_max`` get the very perturbations
cnnlens draws (reproduced from the documented seeded generator, one chunk), so the
scores must agree to float32 rounding: relative 1e-4 (absolute 1e-6). Quantus 0.6
``ROAD`` with ``noise=0`` imputes exactly as cnnlens (same linear system), so the
images agree to 1e-6 and the per-image top-1 curves are identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnlens import metrics
from cnnlens.errors import InputError
from cnnlens.metrics.evaluate import evaluate, resolve_metrics
from cnnlens.metrics.road import linear_impute
from cnnlens.seeding import Draws

RTOL, ATOL = 1e-4, 1e-6


class TinyCNN(nn.Module):
    def __init__(self, c=3, k=4):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(c, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, k)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(h.mean((2, 3)))


class TiedLinear(nn.Module):
    """``logit_k = sum_chw v_k[h,w] x[c,h,w]``: the input gradient is ``v_k`` on every channel."""

    def __init__(self, h=8, w=8, k=3):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.v = nn.Parameter(torch.randn(k, h, w, generator=g))

    def forward(self, x):
        return torch.einsum("nchw,khw->nk", x, self.v)


class OnePixel(nn.Module):
    """Two classes; the logit of class 0 is ``4 x[0, row, col]``, class 1 is constant 0."""

    def __init__(self, row=3, col=4):
        super().__init__()
        self.row, self.col = row, col
        self.scale = nn.Parameter(torch.tensor(4.0))

    def forward(self, x):
        v = self.scale * x[:, 0, self.row, self.col]
        return torch.stack([v, torch.zeros_like(v)], 1)


def signed_gradient(model, x, target):
    """Channel-mean gradient of the target logit (no abs); the exact local linear explanation
    under infidelity's channel broadcast when the channels share their gradient (one channel,
    or :class:`TiedLinear`)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return g.mean(1, keepdim=True)


@pytest.fixture(scope="module")
def case():
    g = torch.Generator().manual_seed(3)
    model = TinyCNN().eval()
    x = torch.randn(3, 3, 8, 8, generator=g)
    maps = torch.rand(3, 1, 8, 8, generator=g) + 0.01
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, maps, y


# --- infidelity ---------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
def test_infidelity_equals_captum_on_the_same_perturbations(case, normalize):
    captum_metrics = pytest.importorskip("captum.metrics")
    model, x, maps, y = case
    samples, noise, seed = 20, 0.1, 7
    n = x.shape[0]
    ours = metrics.infidelity(
        model,
        x,
        maps,
        y,
        samples=samples,
        noise=noise,
        normalize=normalize,
        seed=seed,
        batch_size=n * samples,  # one chunk: Captum gets the whole noise in one call
    )
    # perturbation j of every image is draw j of the seed (the same for every image)
    sample = torch.arange(n * samples) % samples
    pert = noise * Draws(seed, samples, x.shape[1:])(sample)

    def perturb(inputs):
        assert inputs.shape == pert.shape
        return pert, inputs - pert

    theirs = captum_metrics.infidelity(
        model,
        perturb,
        x,
        maps.expand_as(x),  # Captum needs attributions shaped like the inputs
        target=y,
        n_perturb_samples=samples,
        normalize=normalize,
    )
    assert ours.values.shape == (n,)
    assert torch.allclose(ours.values, theirs.float(), rtol=RTOL, atol=ATOL)
    assert not ours.higher_is_better


def test_infidelity_of_the_gradient_of_a_linear_model_is_zero():
    model = TiedLinear().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g)
    y = model(x).argmax(1)
    grad = signed_gradient(model, x, y)
    exact = metrics.infidelity(model, x, grad, y, normalize=False, noise=0.5, samples=30)
    scaled = metrics.infidelity(model, x, 5.0 * grad, y, normalize=True, noise=0.5, samples=30)
    wrong = metrics.infidelity(model, x, torch.rand(4, 1, 8, 8, generator=g), y, samples=30)
    assert exact.values.abs().max() < 1e-6
    assert scaled.values.abs().max() < 1e-6
    assert torch.allclose(scaled.extras["beta"], torch.full((4,), 0.2), atol=1e-5)
    assert wrong.values.min() > 1.0  # a random map misses most of f(x) - f(x - I)


def test_infidelity_gradient_beats_random_on_a_cnn_for_small_noise(case):
    _, x3, maps, _ = case
    model = TinyCNN(c=1).eval()
    x = x3[:, :1].contiguous()
    y = model(x).argmax(1)
    grad = signed_gradient(model, x, y)
    # A ReLU net is piecewise linear: for small noise the gradient explains f(x) - f(x - I)
    # (measured ~5e-11 against ~1.5e-8 for a random map even after beta scaling).
    good = metrics.infidelity(model, x, grad, y, noise=1e-2, normalize=False)
    bad = metrics.infidelity(model, x, maps, y, noise=1e-2, normalize=True)
    assert (good.values < 0.05 * bad.values).all()


# --- max-sensitivity ----------------------------------------------------------------------


def test_max_sensitivity_equals_captum_on_the_same_perturbations(case):
    captum_metrics = pytest.importorskip("captum.metrics")
    model, x, _, y = case
    samples, radius, seed = 6, 0.05, 3
    n = x.shape[0]
    ours = metrics.max_sensitivity(
        model,
        x,
        None,
        y,
        method=signed_gradient,
        radius=radius,
        samples=samples,
        seed=seed,
        batch_size=n * samples,
    )
    u = Draws(seed, samples, x.shape[1:], kind="uniform")(torch.arange(n * samples) % samples)
    flat = x.flatten(1)
    scale = (radius * (flat.amax(1) - flat.amin(1))).repeat_interleave(samples)
    offsets = (2 * u - 1) * scale.view(-1, 1, 1, 1)

    def perturb(inputs):
        return inputs + offsets

    theirs = captum_metrics.sensitivity_max(
        lambda inputs, target: (  # Captum passes and expects tuples
            signed_gradient(model, inputs[0] if isinstance(inputs, tuple) else inputs, target),
        ),
        x,
        perturb_func=perturb,
        n_perturb_samples=samples,
        target=y,
    )
    assert ours.values.shape == (n,) and ours.extras["samples"].shape == (n, samples)
    assert (ours.values > 0).all()
    assert torch.allclose(ours.values, theirs, rtol=RTOL, atol=ATOL)


def test_max_sensitivity_is_zero_for_input_independent_maps(case):
    model, x, _, _ = case
    constant = torch.linspace(0, 1, 64).view(1, 1, 8, 8)
    r = metrics.max_sensitivity(
        model, x, method=lambda m, xx, t: constant.expand(len(xx), 1, 8, 8), samples=4
    )
    assert torch.equal(r.values, torch.zeros(3))
    # The gradient of a linear model does not depend on the input either.
    linear = TiedLinear().eval()
    r = metrics.max_sensitivity(linear, x, method=signed_gradient, radius=0.1, samples=4)
    assert r.values.abs().max() < 1e-6


def test_max_sensitivity_grows_with_the_radius_and_uses_the_registry(case):
    model, x, _, y = case
    small = metrics.max_sensitivity(model, x, None, y, method="saliency", radius=0.001)
    large = metrics.max_sensitivity(model, x, None, y, method="saliency", radius=0.2)
    assert (small.values < large.values).all()
    again = metrics.max_sensitivity(model, x, None, y, method="saliency", radius=0.2)
    assert torch.equal(large.values, again.values)  # seeded


# --- ROAD ---------------------------------------------------------------------------------


def test_linear_imputation_equals_quantus():
    pytest.importorskip("quantus")
    from quantus.functions.perturb_func import noisy_linear_imputation

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 9, 11, generator=g, dtype=torch.float64)
    maps = torch.rand(3, 1, 9, 11, generator=g)
    order = maps.flatten(1).argsort(1, descending=True)
    for k in (1, 20, 50, 98):
        removed = torch.zeros(3, 99, dtype=torch.bool)
        removed.scatter_(1, order[:, :k], True)
        ours = linear_impute(x, removed.view(3, 9, 11))
        for i in range(3):
            theirs = noisy_linear_imputation(x[i].numpy(), order[i, :k].numpy(), noise=0.0)
            assert np.abs(ours[i].numpy() - theirs).max() < 1e-9
        assert torch.equal(
            ours[~removed.view(3, 1, 9, 11).expand_as(x)],
            x[~removed.view(3, 1, 9, 11).expand_as(x)],
        )


def test_road_top1_curves_equal_quantus_without_noise():
    quantus = pytest.importorskip("quantus")
    g = torch.Generator().manual_seed(5)
    model = TinyCNN(c=1).eval()  # Quantus indexes channel-features: one channel
    x = torch.randn(4, 1, 10, 10, generator=g)
    maps = torch.rand(4, 1, 10, 10, generator=g) + 0.01
    with torch.no_grad():
        y = model(x).argmax(1)
    percentages = list(range(10, 100, 10))
    ours = metrics.road(model, x, maps, y, fractions=[p / 100 for p in percentages], noise=0.0)
    assert ours.curves.shape == (4, 9) and ours.extras["correct"].shape == (4, 9)
    for i in range(4):  # Quantus' ROAD returns the mean over images: call it per image
        theirs = quantus.ROAD(percentages=percentages, noise=0.0, disable_warnings=True)(
            model=model,
            x_batch=x[i : i + 1].numpy(),
            y_batch=y[i : i + 1].numpy(),
            a_batch=maps[i : i + 1].numpy(),
            device="cpu",
        )
        assert list(theirs) == percentages
        assert [float(theirs[p]) for p in percentages] == ours.extras["correct"][i].tolist()
    assert torch.allclose(ours.values, ours.curves.mean(1))


def test_road_morf_drops_once_the_only_used_pixel_is_removed():
    model = OnePixel(row=3, col=4).eval()
    x = torch.zeros(2, 1, 8, 8)
    x[:, 0, 3, 4] = 2.0  # class 0 probability sigmoid(8)
    maps = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    # Make the used pixel the 10th most relevant of 64: removed from 20 % on (12 pixels).
    flat = maps.view(2, -1)
    top = flat.argsort(1, descending=True)
    for i in range(2):
        flat[i, 3 * 8 + 4], flat[i, top[i, 9]] = (
            flat[i, top[i, 9]].item(),
            flat[i, 3 * 8 + 4].item(),
        )
    target = torch.zeros(2, dtype=torch.long)
    morf = metrics.road(model, x, maps, target)
    lerf = metrics.road(model, x, maps, target, order="lerf")
    assert (morf.curves[:, 0] > 0.99).all()  # 10 %: 6 pixels removed, the used one kept
    assert (morf.curves[:, 1:] < 0.6).all()  # imputed from zero neighbours: ~sigmoid(0 +- noise)
    # Least relevant first keeps the 10th most relevant pixel up to 80 % (51 pixels removed).
    assert (lerf.curves[:, :-1] > 0.99).all() and (lerf.curves[:, -1] < 0.6).all()
    assert torch.equal(morf.extras["correct"][:, 0], torch.ones(2))
    assert not morf.higher_is_better and lerf.higher_is_better
    assert morf.values.max() < lerf.values.min()


def test_road_is_seeded(case):
    model, x, maps, y = case
    a = metrics.road(model, x, maps, y, noise=0.05, seed=1)
    b = metrics.road(model, x, maps, y, noise=0.05, seed=1)
    c = metrics.road(model, x, maps, y, noise=0.05, seed=2)
    assert torch.equal(a.values, b.values) and not torch.equal(a.values, c.values)


# --- bad input ----------------------------------------------------------------------------


def test_bad_input_raises_input_error(case):
    model, x, maps, y = case
    nan_maps = maps.clone()
    nan_maps[0, 0, 0, 0] = float("nan")
    nan_x = x.clone()
    nan_x[1, 0, 2, 2] = float("nan")
    calls = [
        lambda: metrics.infidelity(model, x, maps[:, 0]),
        lambda: metrics.infidelity(model, x, nan_maps),
        lambda: metrics.infidelity(model, nan_x, maps),
        lambda: metrics.infidelity(model, x, maps, noise=0),
        lambda: metrics.infidelity(model, x, maps, samples=0),
        lambda: metrics.infidelity(model, x, maps[:2]),
        lambda: metrics.max_sensitivity(model, x, maps, method="saliency", radius=0),
        lambda: metrics.max_sensitivity(model, x, maps, method="saliency", radius=-0.1),
        lambda: metrics.max_sensitivity(model, x, maps, method="saliency", samples=0),
        lambda: metrics.max_sensitivity(model, x, maps),  # no method
        lambda: metrics.max_sensitivity(model, x, maps, method="no-such-method"),
        lambda: metrics.max_sensitivity(model, x, nan_maps, method="saliency"),
        lambda: metrics.max_sensitivity(model, x, method=lambda m, xx, t: xx[:, :1, :4]),
        lambda: metrics.road(model, x, maps[:, 0]),
        lambda: metrics.road(model, x, nan_maps),
        lambda: metrics.road(model, nan_x, maps),
        lambda: metrics.road(model, x, maps, fractions=[0.5, 1.0]),
        lambda: metrics.road(model, x, maps, fractions=[]),
        lambda: metrics.road(model, x, maps, order="random"),
        lambda: metrics.road(model, x, maps, noise=-1),
    ]
    for call in calls:
        with pytest.raises(InputError):
            call()


# --- evaluate -----------------------------------------------------------------------------


def test_evaluate_runs_optional_metrics_only_when_named(case):
    model, x, _, _ = case
    optional = {"max-sensitivity", "infidelity", "road"}
    defaults = [m for m in metrics.names() if metrics.get(m).default]
    assert resolve_metrics("all") == defaults  # every optional metric is left out
    assert optional <= set(metrics.names()) and not optional & set(resolve_metrics("all"))
    assert resolve_metrics("deletion,road") == ["deletion", "road"]
    ev = evaluate(
        model,
        x,
        methods=["saliency"],
        metrics=["max-sensitivity", "infidelity", "road"],
        metric_params={"max-sensitivity": {"samples": 3}, "infidelity": {"samples": 10}},
        progress=False,
    )
    for method in ("saliency", "random", "sobel"):
        assert set(ev.values[method]) == {"max-sensitivity", "infidelity", "road"}
        for vals in ev.values[method].values():
            assert vals.shape == (3,) and torch.isfinite(vals).all()
    assert ev.curves["saliency"]["road"].shape == (3, 9)
    assert (ev.values["sobel"]["max-sensitivity"] > 0).all()
    assert "road ↓" in ev.markdown()

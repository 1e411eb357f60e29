"""Agreement with Captum on the same model, inputs, targets and settings.

Tolerance (stated): max |ours - captum| <= 1e-5 * max |captum| for every
method below. Both sides run in float64: in float32 another CPU's kernels (or
another thread count) sum in another order, and a ReLU input within rounding of
zero can switch sides between the two runs, which moves a gradient map by far
more than rounding (2.4e-3 of its maximum was seen on an AMD EPYC). In float64
the differences are ~1e-15, so the 1e-5 bound holds on any CPU and thread
count. The model is a ResNet-20 with non-trivial BatchNorm statistics
(skip connections included); LRP uses a plain CNN because Captum's LRP
cannot run on ResNets (its rules do not cover the residual add / Identity).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from cnnlens import nets
from cnnlens.attribution import explain

captum_attr = pytest.importorskip("captum.attr")

pytestmark = pytest.mark.numerics

TOL = 1e-5


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = nets.create("resnet20", num_classes=8).eval().double()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(-0.1, 0.1, generator=gen)
    x = torch.randn(3, 3, 32, 32, generator=gen, dtype=torch.float64)
    target = torch.tensor([0, 3, 7])
    return model, x, target


def close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.detach()
    return float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def captum(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def test_saliency(setup):
    model, x, t = setup
    ref = captum(lambda: captum_attr.Saliency(model).attribute(x, target=t, abs=True))
    ours = explain(model, x, "saliency", target=t)
    assert close(ours.raw.abs(), ref) <= TOL
    assert close(ours.maps, ref.amax(1, keepdim=True)) <= TOL


def test_input_x_gradient(setup):
    model, x, t = setup
    ref = captum(lambda: captum_attr.InputXGradient(model).attribute(x, target=t))
    assert close(explain(model, x, "input-x-gradient", target=t).raw, ref) <= TOL


@pytest.mark.parametrize("integration", ["gausslegendre", "riemann_left", "riemann_middle"])
def test_integrated_gradients(setup, integration):
    model, x, t = setup
    ig = captum_attr.IntegratedGradients(model)
    ref = captum(lambda: ig.attribute(x, target=t, n_steps=8, method=integration))
    ours = explain(model, x, "integrated-gradients", target=t, steps=8, integration=integration)
    assert close(ours.raw, ref) <= TOL


def test_integrated_gradients_user_baseline_and_layer(setup):
    model, x, t = setup
    base = torch.full_like(x, 0.3)
    ig = captum_attr.IntegratedGradients(model)
    ref = captum(lambda: ig.attribute(x, baselines=base, target=t, n_steps=8))
    ours = explain(model, x, "integrated-gradients", target=t, steps=8, baseline=base)
    assert close(ours.raw, ref) <= TOL
    lig = captum_attr.LayerIntegratedGradients(model, model.layer3)
    ref = captum(lambda: lig.attribute(x, target=t, n_steps=8))
    ours = explain(model, x, "integrated-gradients", target=t, steps=8, at="layer3")
    assert ours.raw.shape == (3, 64, 8, 8) and ours.maps.shape == (3, 1, 32, 32)
    assert close(ours.raw, ref) <= TOL


def test_guided_backprop(setup):
    model, x, t = setup
    ref = captum(lambda: captum_attr.GuidedBackprop(model).attribute(x, target=t))
    assert close(explain(model, x, "guided-backprop", target=t).raw, ref) <= TOL


def test_deconvnet(setup):
    model, x, t = setup
    ref = captum(lambda: captum_attr.Deconvolution(model).attribute(x, target=t))
    assert close(explain(model, x, "deconvnet", target=t).raw, ref) <= TOL


def test_deeplift(setup):
    model, x, t = setup
    ref = captum(lambda: captum_attr.DeepLift(model).attribute(x, target=t))
    ours = explain(model, x, "deeplift", target=t)
    assert close(ours.raw, ref) <= TOL
    layer_ref = captum(
        lambda: captum_attr.LayerDeepLift(model, model.layer2).attribute(x, target=t)
    )
    assert close(explain(model, x, "deeplift", target=t, at="layer2").raw, layer_ref) <= TOL


def test_grad_cam(setup):
    model, x, t = setup
    layer = captum_attr.LayerGradCam(model, model.layer3)
    low = captum(lambda: layer.attribute(x, target=t, relu_attributions=True))
    ref = captum_attr.LayerAttribution.interpolate(low, (32, 32), "bilinear")
    ours = explain(model, x, "grad-cam", target=t, layer="layer3")
    assert close(ours.extras["layer_map"], low) <= TOL
    assert close(ours.maps, ref) <= TOL
    assert ours.raw is None


def test_guided_grad_cam(setup):
    model, x, t = setup
    ref = captum(lambda: captum_attr.GuidedGradCam(model, model.layer3).attribute(x, target=t))
    assert close(explain(model, x, "guided-grad-cam", target=t).raw, ref) <= TOL


def test_guided_grad_cam_with_relu_after_the_layer():
    """A classifier with ReLUs after the CAM layer: Grad-CAM must keep the plain gradient."""
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
        nn.Flatten(), nn.Linear(8 * 64, 16), nn.ReLU(), nn.Linear(16, 4),
    ).eval().double()  # fmt: skip
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([0, 1, 3])
    ref = captum(lambda: captum_attr.GuidedGradCam(model, model[2]).attribute(x, target=t))
    assert close(explain(model, x, "guided-grad-cam", target=t, layer="2").raw, ref) <= TOL


class PlainNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.r2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.r2(self.c2(self.r1(self.c1(x))))), 1))


def test_lrp_epsilon():
    torch.manual_seed(3)
    model = PlainNet().eval().double()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    t = torch.tensor([0, 2, 4])
    ref = captum(lambda: captum_attr.LRP(model).attribute(x, target=t))
    ours = explain(model, x, "lrp", target=t, rule="epsilon", epsilon=1e-9)
    assert close(ours.raw, ref) <= TOL


def test_deeplift_with_max_pooling():
    """Max pooling gets DeepLIFT's max-pool rule: identical to Captum's where Captum's
    is right (a conv straight into the pool); summation-to-delta through ReLU -> pool and
    overlapping windows, where Captum 0.9 breaks it (captum#1276, #1104: its fallback
    reads the first image's gradient, and max_unpool drops overlapping contributions)."""
    torch.manual_seed(3)
    plain = (
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 16, 5)
        )
        .eval()
        .double()
    )
    x, t = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 4])
    base = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    ref = captum(lambda: captum_attr.DeepLift(plain).attribute(x, baselines=base, target=t))
    assert close(explain(plain, x, "deeplift", target=t, baseline=base).raw, ref) <= TOL

    vgg_like = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(), nn.Linear(8 * 16, 5),
    ).eval()  # fmt: skip
    vgg_like[1].running_mean.uniform_(-0.3, 0.3)
    vgg_like[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 16, 16)
    for baseline in ("zeros", torch.randn(1, 3, 16, 16) * 0.5):
        e = explain(vgg_like, x, "deeplift", target=t, baseline=baseline)
        with torch.no_grad():
            b = torch.zeros(1, 3, 16, 16) if isinstance(baseline, str) else baseline
            gap = vgg_like(x).gather(1, t[:, None])[:, 0] - vgg_like(b)[0, t]
        assert torch.allclose(e.raw.flatten(1).sum(1), gap, atol=1e-4)
        assert e.extras["delta"].abs().max() < 1e-4

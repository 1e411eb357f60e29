"""Properties the gradient, propagation and CAM methods must have.

Stated tolerances: IG completeness error shrinks monotonically over
steps 2 -> 8 -> 32 and is < 1e-2 * |S(x) - S(x')| at 32 Gauss-Legendre steps;
LRP conservation |sum R - S_t(x)| <= 1e-4 * |S_t(x)| on a zero-bias ResNet-20
for every rule; DeepLIFT summation-to-delta residual <= 1e-4 * scale.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlens import nets
from cnnlens.attribution import explain, get, methods
from cnnlens.errors import CnnlensError, InputError, LayerError, TargetError
from cnnlens.hooks import model_fingerprint, same_fingerprint

pytestmark = pytest.mark.numerics

MINE = [
    "saliency",
    "input-x-gradient",
    "integrated-gradients",
    "smoothgrad",
    "guided-backprop",
    "deconvnet",
    "deeplift",
    "lrp",
    "cam",
    "grad-cam",
    "grad-cam++",
    "score-cam",
    "guided-grad-cam",
    "layer-cam",
]
FAST = {"integrated-gradients": {"steps": 4}, "smoothgrad": {"samples": 3}}


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=5)
    gen = torch.Generator().manual_seed(2)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
    model.eval()
    return model, torch.randn(3, 3, 32, 32, generator=gen)


def test_all_registered():
    names = methods()
    for name in MINE:
        assert name in names and names[name]


@pytest.mark.parametrize("name", MINE)
def test_no_trace_and_shapes(resnet, name):
    model, x = resnet
    model.train()  # the method must restore training mode too
    before = model_fingerprint(model)
    e = explain(model, x, name, **FAST.get(name, {}))
    assert same_fingerprint(before, model_fingerprint(model))
    assert e.maps.shape == (3, 1, 32, 32) and e.maps.dtype == torch.float32
    assert torch.isfinite(e.maps).all()
    assert e.method == name
    if get(name).pixel_space:
        assert e.raw is not None and e.raw.shape == x.shape
    model.eval()


class Fails(nn.Module):
    """Wraps a model; its ``calls``-th forward raises (inside the method's hooks)."""

    def __init__(self, model: nn.Module, calls: int) -> None:
        super().__init__()
        self.model, self.calls, self.count = model, calls, 0

    def forward(self, x):
        self.count += 1
        if self.count == self.calls:
            raise RuntimeError("boom")
        return self.model(x)


@pytest.mark.parametrize("name", MINE)
def test_no_trace_on_error(resnet, name):
    """The 2nd..4th forward raises: hooks, modes and flags are restored each time."""
    model, x = resnet
    raised = 0
    for calls in (2, 3, 4):
        wrapped = Fails(model, calls=calls)
        before = model_fingerprint(wrapped)
        try:
            explain(wrapped, x[:1, :, :16, :16], name, **FAST.get(name, {}))
        except (RuntimeError, CnnlensError) as exc:
            assert "boom" in str(exc)
            raised += 1
        assert same_fingerprint(before, model_fingerprint(wrapped))
    assert raised >= 1


def test_ig_completeness_goes_to_zero(resnet):
    model, x = resnet
    errors = []
    for steps in (2, 8, 32):
        e = explain(model, x, "integrated-gradients", target=1, steps=steps, baseline="blur")
        errors.append(float(e.extras["completeness_error"].abs().max()))
    with torch.no_grad():
        from cnnlens.attribution.gradient import make_baseline

        gap = (model(x) - model(make_baseline(x, "blur", 0)))[:, 1].abs().max()
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-2 * float(gap), errors


@pytest.mark.parametrize("baseline", ["zeros", "blur", "uniform"])
def test_ig_baselines(resnet, baseline):
    model, x = resnet
    a = explain(model, x, "integrated-gradients", steps=4, baseline=baseline, seed=3)
    b = explain(model, x, "integrated-gradients", steps=4, baseline=baseline, seed=3)
    assert torch.equal(a.raw, b.raw)


def test_ig_riemann_converges_to_gauss(resnet):
    model, x = resnet
    gl = explain(model, x, "integrated-gradients", target=0, steps=24).raw
    rt = explain(
        model, x, "integrated-gradients", target=0, steps=96, integration="riemann_trapezoid"
    ).raw
    assert (gl - rt).abs().max() < 0.05 * gl.abs().max()


def zero_bias_resnet():
    torch.manual_seed(5)
    model = nets.create("resnet20", num_classes=6)
    gen = torch.Generator().manual_seed(6)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
    nn.init.zeros_(model.head.bias)
    return model.eval()


@pytest.mark.parametrize(
    "kw",
    [
        {"rule": "epsilon", "epsilon": 1e-9},
        {"rule": "z+"},
        {"rule": "alpha2-beta1"},
        {"rule": "alpha1-beta0"},
        {"composite": "epsilon-plus"},
        {"composite": "epsilon-plus-zb"},
        {"composite": "epsilon-alpha2-beta1-zb"},
    ],
)
def test_lrp_conservation_on_resnet(kw):
    """Skip connections and BN folding conserve relevance (sum R_input = S_t(x))."""
    model = zero_bias_resnet()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    e = explain(model, x, "lrp", **kw)
    with torch.no_grad():
        score = model(x).gather(1, e.target[:, None])[:, 0]
    total = e.raw.flatten(1).sum(1)
    assert torch.allclose(total, score, rtol=1e-4, atol=1e-4 * float(score.abs().max()))
    assert torch.allclose(e.extras["relevance_sum"], total)


@pytest.mark.parametrize(
    "kw",
    [{"composite": "epsilon"}, {"composite": "epsilon-plus"}, {"rule": "alpha2-beta1"},
     {"composite": "epsilon", "at": "layer2"}],
)  # fmt: skip
def test_lrp_message_form_equals_relevance_form(kw, monkeypatch):
    """The message form (R = a * g, the default for ReLU nets) gives the relevance
    form's maps; the relevance form is what z^B and saturating activations use."""
    from cnnlens.attribution import lrp

    model = nets.create("resnet20", num_classes=10).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.uniform_(-0.2, 0.2)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    message = explain(model, x, "lrp", epsilon=0.01, **kw).raw
    monkeypatch.setattr(lrp, "_message_form", lambda *_a: False)
    relevance = explain(model, x, "lrp", epsilon=0.01, **kw).raw
    assert torch.allclose(message, relevance, atol=1e-5 * float(relevance.abs().max()))


@pytest.mark.parametrize("kw", [{"composite": "epsilon-plus"}, {"composite": "epsilon-plus-zb"}])
def test_lrp_channels_last_copy_equals_default_layout(kw, monkeypatch):
    """On the CPU the folded copy runs channels-last; the maps are the default
    layout's, and the user gets contiguous attributions."""
    from cnnlens.attribution import lrp

    model = zero_bias_resnet()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    fast = explain(model, x, "lrp", **kw)
    assert lrp._FOLDED[model][1][2] == torch.channels_last
    assert fast.raw.is_contiguous()
    lrp._FOLDED.clear()
    monkeypatch.setattr(lrp, "channels_last_if_same", lambda *_a: False)
    plain = explain(model, x, "lrp", **kw).raw
    assert torch.allclose(fast.raw, plain, atol=1e-5 * float(plain.abs().max()))


class _ViewsFeatureMap(nn.Module):
    """Flattens a 4x4 feature map with ``.view``, which channels-last memory refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4 * 4 * 4, 3, bias=False)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.view(y.shape[0], -1))


def test_lrp_keeps_default_layout_for_a_view_of_a_feature_map():
    from cnnlens.attribution import lrp

    model = _ViewsFeatureMap().eval()
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    lrp0 = explain(model, x, "lrp", rule="epsilon", epsilon=0.0, target=1).raw
    assert lrp._FOLDED[model][1][2] == torch.contiguous_format
    ixg = explain(model, x, "input-x-gradient", target=1).raw  # LRP-0 without biases
    assert torch.allclose(lrp0, ixg, atol=1e-5 * float(ixg.abs().max()))


@pytest.mark.parametrize(
    "name",
    ["saliency", "input-x-gradient", "guided-backprop", "deconvnet", "cam", "grad-cam",
     "grad-cam++", "layer-cam", "score-cam"],
)  # fmt: skip
def test_methods_on_the_channels_last_copy_equal_the_model(resnet, name, monkeypatch):
    """Rules and stored layers go on the copy and leave it clean; same maps."""
    from cnnlens.accel.fast import _FAST_COPY

    model, x = resnet
    fast = explain(model, x, name, target=1)
    copy = _FAST_COPY["exact"][model][1].module
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in copy.modules())
    monkeypatch.setattr("cnnlens.accel.fast._copyable", lambda _m: False)  # the model as given
    plain = explain(model, x, name, target=1)
    for ours, ref in ((fast.maps, plain.maps), (fast.raw, plain.raw)):
        if ref is not None:
            assert ours.is_contiguous()
            assert torch.allclose(ours, ref, atol=1e-5 * float(ref.abs().max()))


def test_lrp_conservation_at_layer():
    model = zero_bias_resnet()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    e = explain(model, x, "lrp", rule="epsilon", epsilon=1e-9, at="layer2")
    with torch.no_grad():
        score = model(x).gather(1, e.target[:, None])[:, 0]
    assert e.raw.shape == (2, 32, 16, 16)
    assert torch.allclose(e.raw.flatten(1).sum(1), score, rtol=1e-4)


def test_lrp_epsilon_zero_equals_input_x_gradient():
    """On a bias-free ReLU net without BN, LRP-0 equals input x gradient."""
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 8 * 8, 4, bias=False),
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    lrp = explain(model, x, "lrp", rule="epsilon", epsilon=0.0, target=1).raw
    ixg = explain(model, x, "input-x-gradient", target=1).raw
    assert torch.allclose(lrp, ixg, atol=1e-5 * float(ixg.abs().max()))


def test_lrp_does_not_touch_user_batchnorm(resnet):
    model, x = resnet
    bn = model.bn1
    before = (bn.weight.clone(), bn.running_mean.clone(), model.conv1.weight.clone())
    explain(model, x, "lrp")
    assert torch.equal(before[0], bn.weight) and torch.equal(before[2], model.conv1.weight)
    assert isinstance(model.bn1, nn.BatchNorm2d)


def test_deeplift_summation_to_delta(resnet):
    model, x = resnet
    e = explain(model, x, "deeplift", baseline="blur", target=2)
    assert e.extras["delta"].abs().max() < 1e-4 * float(e.raw.abs().sum((1, 2, 3)).max())


def test_cam_equals_grad_cam_on_gap_linear(resnet):
    model, x = resnet
    cam = explain(model, x, "cam", target=1)
    grad_cam = explain(model, x, "grad-cam", target=1)
    low_cam, low_grad = cam.extras["layer_map"], grad_cam.extras["layer_map"]
    assert torch.allclose(low_cam.clamp_min(0), low_grad, atol=1e-6)
    # the CAM sums to the logit minus the head's bias
    with torch.no_grad():
        logit = model(x)[:, 1] - model.head.bias[1]
    assert torch.allclose(low_cam.sum((1, 2, 3)), logit, atol=1e-4)


def test_cam_rejects_non_gap_head():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
    ).eval()
    with pytest.raises(LayerError, match="global average"):
        explain(model, torch.randn(1, 3, 8, 8), "cam", layer="1")


@pytest.mark.parametrize("base", ["saliency", "integrated-gradients", "grad-cam", "lrp"])
def test_smoothgrad_zero_noise_is_base(resnet, base):
    model, x = resnet
    kw = {"steps": 4} if base == "integrated-gradients" else {}
    plain = explain(model, x, base, target=2, **kw)
    smooth = explain(model, x, "smoothgrad", base=base, noise=0.0, samples=3, target=2, **kw)
    assert torch.allclose(plain.maps, smooth.maps, atol=1e-6 * float(plain.maps.abs().max()))


def test_smoothgrad_kinds_and_seed(resnet):
    model, x = resnet
    sg = explain(model, x, "smoothgrad", samples=6, seed=4)
    assert torch.equal(sg.maps, explain(model, x, "smoothgrad", samples=6, seed=4).maps)
    assert not torch.equal(sg.raw, explain(model, x, "smoothgrad", samples=6, seed=5).raw)
    sq = explain(model, x, "smoothgrad", samples=6, seed=4, kind="smoothgrad_sq").raw
    var = explain(model, x, "smoothgrad", samples=6, seed=4, kind="vargrad").raw
    assert torch.allclose(var, sq - sg.raw**2, atol=1e-6 * float(sq.max()))
    # the chunking does not change the result beyond float rounding
    small = explain(model, x, "smoothgrad", samples=6, seed=4, batch_size=4)
    assert small.raw.shape == sg.raw.shape


def test_guided_backprop_is_gradient_without_relu():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 6, 3), nn.ELU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    ).eval()  # fmt: skip
    x = torch.randn(3, 3, 10, 10)
    grad = explain(model, x, "saliency", target=2).raw
    assert torch.equal(explain(model, x, "guided-backprop", target=2).raw, grad)


def test_guided_backprop_and_deconvnet_signs(resnet):
    model, x = resnet
    gbp = explain(model, x, "guided-backprop").raw
    sal = explain(model, x, "saliency").raw
    assert not torch.allclose(gbp, sal)


@pytest.mark.parametrize("name", ["saliency", "input-x-gradient", "guided-backprop", "deeplift"])
def test_feature_attribution_at_layer(resnet, name):
    model, x = resnet
    e = explain(model, x, name, at="layer3", target=0)
    assert e.raw.shape == (3, 64, 8, 8)
    assert e.maps.shape == (3, 1, 32, 32)


def test_layer_input_x_gradient_sums_like_captum_layer_gradient_x_activation(resnet):
    captum_attr = pytest.importorskip("captum.attr")
    model, x = resnet
    ref = captum_attr.LayerGradientXActivation(model, model.layer2).attribute(x, target=1)
    ref = ref.detach()
    ours = explain(model, x, "input-x-gradient", at="layer2", target=1).raw
    assert torch.allclose(ours, ref, atol=1e-6 * float(ref.abs().max()))


def test_bad_inputs(resnet):
    model, x = resnet
    with pytest.raises(InputError, match="steps"):
        explain(model, x, "integrated-gradients", stesp=3)
    with pytest.raises(InputError, match="baseline"):
        explain(model, x, "integrated-gradients", baseline="nope")
    with pytest.raises(InputError, match="broadcast"):
        explain(model, x, "integrated-gradients", baseline=torch.zeros(2, 3, 5, 5))
    with pytest.raises(InputError, match="integration"):
        explain(model, x, "integrated-gradients", integration="simpson")
    with pytest.raises(LayerError, match="layer9"):
        explain(model, x, "grad-cam", layer="layer9")
    with pytest.raises(InputError, match="composite"):
        explain(model, x, "lrp", composite="magic")
    with pytest.raises(InputError, match="rule"):
        explain(model, x, "lrp", rule="gamma")
    with pytest.raises(InputError, match="kind"):
        explain(model, x, "smoothgrad", kind="median")
    with pytest.raises(InputError, match="unknown attribution method"):
        explain(model, x, "smoothgrad", base="salincy")
    with pytest.raises(LayerError, match="at="):
        explain(model, x, "saliency", at="head")
    with pytest.raises(CnnlensError):
        explain(model, x[0], "saliency")
    for name in ("saliency", "grad-cam", "lrp", "deeplift", "guided-grad-cam", "score-cam"):
        with pytest.raises(TargetError, match="target"):
            explain(model, x, name, target=99)
        with pytest.raises(TargetError, match="one class per image"):
            explain(model, x, name, target=torch.tensor([0, 1]))
        with pytest.raises(TargetError):
            explain(model, x, name, target="cat")


@pytest.mark.parametrize("name", ["saliency", "grad-cam", "lrp", "deeplift", "guided-grad-cam"])
def test_targets_resolved_in_the_pass(resnet, name):
    """None = predicted class; an int or [N] tensor are used as given."""
    model, x = resnet
    with torch.no_grad():
        predicted = model(x).argmax(1)
    assert torch.equal(explain(model, x, name).target, predicted)
    given = torch.tensor([4, 0, 2])
    assert torch.equal(explain(model, x, name, target=given).target, given)
    assert torch.equal(explain(model, x, name, target=3).target, torch.full((3,), 3))
    one = explain(model, x, name, target=given, batch_size=1)
    assert torch.allclose(one.maps, explain(model, x, name, target=given).maps, atol=1e-5)


def test_explanation_displays_in_jupyter(resnet):
    model, x = resnet
    png = explain(model, x[:2], "grad-cam")._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["integrated-gradients", "smoothgrad", "score-cam", "deeplift"])
def test_chunking_does_not_change_results(resnet, name):
    """Chunks that split an image's steps/samples/channels give the same maps."""
    model, x = resnet
    kw = FAST.get(name, {})
    whole = explain(model, x, name, target=1, **kw).maps
    split = explain(model, x, name, target=1, batch_size=3, **kw).maps
    assert torch.allclose(whole, split, rtol=1e-4, atol=1e-5 * float(whole.abs().max()))

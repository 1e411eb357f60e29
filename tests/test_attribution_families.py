"""Every propagation, gradient and CAM method on every ImageNet family cnnlens builds:
a correct map or a cnnlens error that names the operation.

The families are written as torchvision writes them (reused in-place ReLUs, ReLU6,
SiLU and the squeeze-excitation product, DenseNet's functional ``F.relu`` and
concatenation, ConvNeXt's LayerNorm, GELU, layer_scale and permutes). They run
at 64 px (the smallest size at which every family keeps a spatial map at its
last stage), two images, float64 (as tests/test_attribution_captum.py: so a ReLU
input within rounding of zero cannot switch sides between two runs), with
BatchNorm statistics set from a batch so signals neither vanish nor explode.

Correct means (stated tolerances): saliency, input x gradient, Integrated
Gradients (2 steps) and Grad-CAM equal Captum's to 1e-5 of the maximum;
DeepLIFT's sum of attributions (Rescale and RevealCancel) equals S(x) - S(x0) per
image to 1e-6 of |S(x) - S(x0)|; LRP on the bias-free copy of the family conserves relevance,
sum R = S_t(x), to 1e-4 (epsilon rule, epsilon 1e-9) — or raises a LayerError — and
on the family with its biases sum R + the biases' share = S_t(x) to 1e-3;
every other method gives a finite [N,1,H,W] map. The model is unchanged after
every call, also after an error.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from cnnlens import layers, nets
from cnnlens.attribution import explain
from cnnlens.errors import LayerError
from cnnlens.hooks import model_fingerprint, same_fingerprint

captum_attr = pytest.importorskip("captum.attr")

pytestmark = pytest.mark.numerics

FAMILIES = ["resnet18", "resnet50", "vgg16_bn", "mobilenet_v2", "efficientnet_b0",
            "densenet121", "convnext_tiny"]  # fmt: skip
SIZE = 64
# (family, method) -> words the refusal must contain
REFUSED = {
    ("densenet121", "guided-backprop"): "functional in-place relu_",
    ("densenet121", "deconvnet"): "functional in-place relu_",
    ("densenet121", "guided-grad-cam"): "functional in-place relu_",
    ("vgg16_bn", "cam"): "something else runs between them",
    ("convnext_tiny", "cam"): "something else runs between them",
}
FINITE_ONLY = ["guided-backprop", "deconvnet", "guided-grad-cam", "grad-cam++", "layer-cam", "cam"]


def calibrated(name: str, *, bias_free: bool = False, seed: int = 0) -> nn.Module:
    """The family in float64 with BatchNorm statistics from one batch (no vanishing
    signal); ``bias_free``: every bias and BatchNorm shift zero (relevance then conserves)."""
    torch.manual_seed(seed)
    model = nets.create(name, num_classes=10).double()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
        if hasattr(m, "layer_scale"):
            m.layer_scale.data.fill_(0.1)  # ConvNeXt's 1e-6 would hide its blocks
    with torch.no_grad():
        model.train()(torch.randn(4, 3, SIZE, SIZE, dtype=torch.float64))
    model.eval()
    if bias_free:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.zero_()
                bias = getattr(m, "bias", None)
                if isinstance(bias, torch.Tensor):
                    bias.zero_()
    return model


_MODELS: dict[tuple[str, bool], nn.Module] = {}


def model_for(name: str, bias_free: bool = False) -> nn.Module:
    if (name, bias_free) not in _MODELS:
        _MODELS[(name, bias_free)] = calibrated(name, bias_free=bias_free)
    return _MODELS[(name, bias_free)]


def images() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, SIZE, SIZE, generator=gen, dtype=torch.float64)


def close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.detach()
    return float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


def captum(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def run(model: nn.Module, x: torch.Tensor, method: str, **kw):
    """``explain`` with the model's fingerprint checked, also when it raises."""
    before = model_fingerprint(model)
    try:
        return explain(model, x, method, **kw)
    finally:
        assert same_fingerprint(before, model_fingerprint(model)), method


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_methods_equal_captum(family):
    model, x, t = model_for(family), images(), torch.tensor([3, 7])
    ref = captum(lambda: captum_attr.Saliency(model).attribute(x, target=t, abs=True))
    assert close(run(model, x, "saliency", target=t).raw.abs(), ref) <= 1e-5
    ref = captum(lambda: captum_attr.InputXGradient(model).attribute(x, target=t))
    assert close(run(model, x, "input-x-gradient", target=t).raw, ref) <= 1e-5
    ig = captum_attr.IntegratedGradients(model)
    ref = captum(lambda: ig.attribute(x, target=t, n_steps=2))
    assert close(run(model, x, "integrated-gradients", target=t, steps=2).raw, ref) <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_grad_cam_equals_captum_at_the_auto_layer(family):
    model, x, t = model_for(family), images(), torch.tensor([3, 7])
    name = layers.auto_layer(model, x)
    assert name == ("layer4" if family.startswith("resnet") else "features")
    last, shape = layers.suggest(model, x)[-1]
    assert last == name and len(shape) == 3 and shape[1] * shape[2] > 1
    low = captum(
        lambda: captum_attr.LayerGradCam(model, model.get_submodule(name)).attribute(
            x, target=t, relu_attributions=True
        )
    )
    ours = run(model, x, "grad-cam", target=t)
    assert close(ours.extras["layer_map"], low) <= 1e-5


@pytest.mark.parametrize("rule", ["rescale", "reveal-cancel"])
@pytest.mark.parametrize("family", FAMILIES)
def test_deeplift_summation_to_delta(family, rule):
    model, x = model_for(family), images()
    e = run(model, x, "deeplift", target=5, rule=rule)
    with torch.no_grad():
        expected = model(x)[:, 5] - model(torch.zeros_like(x[:1]))[:, 5]
    assert expected.abs().min() > 1e-3  # a real difference to decompose
    assert torch.allclose(e.raw.flatten(1).sum(1), expected, rtol=1e-6, atol=0)
    assert e.maps.shape == (2, 1, SIZE, SIZE) and torch.isfinite(e.maps).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_lrp_conserves_or_refuses(family):
    model, x = model_for(family, bias_free=True), images()
    with torch.no_grad():
        score = model(x)[:, 5]
    e = run(model, x, "lrp", rule="epsilon", epsilon=1e-9, target=5)
    assert torch.allclose(e.raw.flatten(1).sum(1), score, rtol=1e-4, atol=0)
    try:
        e = run(model, x, "lrp", target=5)  # the default composite, epsilon-plus
    except LayerError as exc:  # the safety net: named, never a silent loss
        assert "not conserved" in str(exc)
    else:
        assert torch.allclose(e.raw.flatten(1).sum(1), score, rtol=1e-2, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_lrp_with_biases_conserves_counting_the_bias_share(family):
    """With biases (BatchNorm shifts folded into them) relevance is conserved once the
    biases' share is counted: sum R + sum_layers sum b * R_z / (z + eps) = S_t(x), to the
    epsilon rule's own share (float64); epsilon-plus conserves so or raises."""
    model, x = copy.deepcopy(model_for(family)), images()  # the shared model stays as it is
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # every bias non-zero (some families initialise them to zero)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        score = model(x)[:, 5]
    try:
        e = run(model, x, "lrp", target=5)  # epsilon-plus: z+ may lose relevance
    except LayerError as exc:  # the safety net, now also with biases: named, never silent
        assert "not conserved" in str(exc)  # named (bias-free models: no share to count)
    else:
        kept = e.extras["relevance_sum"] + e.extras["bias_share"]
        assert torch.allclose(kept, score, rtol=1e-3, atol=0)
    e = run(model, x, "lrp", composite="epsilon", target=5)
    kept = e.extras["relevance_sum"] + e.extras["bias_share"]
    assert torch.allclose(kept, score, rtol=1e-3, atol=0)
    assert e.extras["bias_share"].abs().min() > 1e-3 * score.abs().min()  # biases do absorb


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", FINITE_ONLY)
def test_other_methods_run_or_refuse_by_name(family, method):
    model, x = model_for(family), images()
    words = REFUSED.get((family, method))
    if words is not None:
        with pytest.raises(LayerError, match=words):
            run(model, x, method, target=1)
        return
    e = run(model, x, method, target=1)
    assert e.maps.shape == (2, 1, SIZE, SIZE) and torch.isfinite(e.maps).all()
    if method == "cam":  # CAM is the logit's decomposition: ReLU(CAM) = Grad-CAM
        cam = run(model, x, "grad-cam", target=1)
        if family != "densenet121":  # there CAM maps ReLU(A): Grad-CAM is at A itself
            low = e.extras["layer_map"]
            assert close(low.clamp_min(0), cam.extras["layer_map"]) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("family", ["resnet50", "efficientnet_b0"])
def test_full_size(family):
    """224 px, one image: Captum's saliency and Grad-CAM, in float64 (in float32 a
    random-weight ResNet-50's gradients differ by 6e-3 of their maximum between any two
    summation orders, which says nothing about the method); DeepLIFT and LRP finite in
    float32, as users run them."""
    torch.manual_seed(0)
    model = nets.create(family, num_classes=10).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([4])
    wide, xd = copy.deepcopy(model).double(), x.double()
    ref = captum(lambda: captum_attr.Saliency(wide).attribute(xd, target=t, abs=True))
    assert close(run(wide, xd, "saliency", target=t).raw.abs(), ref) <= 1e-6
    name = layers.auto_layer(wide, xd)
    low = captum(
        lambda: captum_attr.LayerGradCam(wide, wide.get_submodule(name)).attribute(xd, target=t)
    ).clamp_min(0)
    assert close(run(wide, xd, "grad-cam", target=t).extras["layer_map"], low) <= 1e-6
    for method in ("deeplift", "lrp"):
        e = run(model, x, method, target=t)
        assert e.maps.shape == (1, 1, 224, 224) and torch.isfinite(e.maps).all()

"""HiResCAM (Draelos & Carin 2020): element-wise gradient x activation, summed over channels."""

from __future__ import annotations

import torch
from torch import nn

import cnnlens
from cnnlens import nets
from cnnlens.hooks import model_fingerprint, same_fingerprint


def _deep_head() -> nn.Module:
    """A conv layer ("1") that feeds another conv before the pooled head: its gradient
    varies over locations, so HiResCAM and Grad-CAM differ."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4),
    ).eval()  # fmt: skip


def test_equals_grad_cam_when_the_layer_feeds_gap_and_linear():
    """Draelos & Carin, section 3.2: with GAP + linear above, dS/dA is w_k / HW at every
    location, so the element-wise product sums to Grad-CAM's map."""
    torch.manual_seed(1)
    model = nets.create("resnet8", num_classes=5).eval()
    x = torch.randn(3, 3, 32, 32)
    fp = model_fingerprint(model)
    hires = cnnlens.explain(model, x, "hirescam")
    grad = cnnlens.explain(model, x, "grad-cam")
    assert same_fingerprint(fp, model_fingerprint(model))
    assert hires.maps.abs().sum() > 0
    torch.testing.assert_close(hires.maps, grad.maps, rtol=1e-4, atol=1e-6)


def test_is_the_sum_of_gradient_times_activation_per_location():
    model, x = _deep_head(), torch.randn(2, 3, 8, 8)
    target = torch.tensor([1, 3])
    e = cnnlens.explain(model, x, "hirescam", target=target, layer="1")
    a = torch.relu(model[0](x)).requires_grad_(True)
    logits = model[2:](a)
    (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), a)
    expected = (g * a).sum(1, keepdim=True).clamp_min(0).detach()
    torch.testing.assert_close(e.extras["layer_map"], expected, rtol=1e-4, atol=1e-6)
    grad = cnnlens.explain(model, x, "grad-cam", target=target, layer="1")
    assert not torch.allclose(e.extras["layer_map"], grad.extras["layer_map"], atol=1e-4)

"""XGrad-CAM (Fu et al. 2020): channel weights sum(A * dS/dA) / sum(A)."""

from __future__ import annotations

import torch
from torch import nn

import cnnlens
from cnnlens.attribution.xgrad_cam import xgrad_weights
from cnnlens.hooks import model_fingerprint, same_fingerprint


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4),
    ).eval()  # fmt: skip


def test_weights_follow_the_formula_on_a_constructed_net():
    """Weights from eq. (13) written out with the layer's activations and gradients."""
    model, x = _net(), torch.randn(3, 3, 8, 8)
    target = torch.tensor([0, 2, 3])
    fp = model_fingerprint(model)
    e = cnnlens.explain(model, x, "xgrad-cam", target=target, layer="1")
    assert same_fingerprint(fp, model_fingerprint(model))
    a = torch.relu(model[0](x)).requires_grad_(True)
    (g,) = torch.autograd.grad(model[2:](a).gather(1, target[:, None]).sum(), a)
    a, g = a.detach(), g.detach()
    expected = torch.zeros(3, 1, 8, 8)
    for n in range(3):
        for k in range(6):
            total = a[n, k].sum()
            w = (a[n, k] * g[n, k]).sum() / total if total > 0 else torch.tensor(0.0)
            expected[n, 0] += w * a[n, k]
    torch.testing.assert_close(e.extras["layer_map"], expected.clamp_min(0), rtol=1e-4, atol=1e-6)


def test_channels_without_activation_get_weight_zero():
    a = torch.zeros(1, 2, 3, 3)
    a[0, 1] = 2.0
    g = torch.ones(1, 2, 3, 3) * torch.tensor([5.0, 0.5])[None, :, None, None]
    assert xgrad_weights(a, g).flatten().tolist() == [0.0, 0.5]


def test_equals_grad_cam_below_gap_and_linear():
    """With GAP + linear above the layer dS/dA_k = w_k / HW everywhere, so the
    activation-weighted average of the gradient is Grad-CAM's weight."""
    model, x = _net(), torch.randn(3, 3, 8, 8)
    xg = cnnlens.explain(model, x, "xgrad-cam", layer="3")
    grad = cnnlens.explain(model, x, "grad-cam", layer="3")
    a = torch.relu(model[2](torch.relu(model[0](x))))
    live = (a.sum((2, 3)) > 0).all()  # every channel active: the two weightings coincide
    if live:
        torch.testing.assert_close(xg.maps, grad.maps, rtol=1e-4, atol=1e-6)
    else:
        assert (xg.maps >= 0).all()

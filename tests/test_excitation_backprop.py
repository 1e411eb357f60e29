"""Excitation Backprop (Zhang et al. 2016): marginal winning probability, top-down."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import cnnlens
from cnnlens import nets
from cnnlens.hooks import model_fingerprint, same_fingerprint


def _net(nonneg: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4),
    ).eval()  # fmt: skip
    if nonneg:
        with torch.no_grad():
            for p in model.parameters():
                p.abs_()
    return model


def _share(part: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    return torch.where(whole > 0, part / whole.clamp_min(1e-30), torch.zeros_like(part))


def _mwp_by_hand(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eqs. (5)-(8) written out layer by layer: P = 1 at the target, shared by
    a_i w+_ij / sum_i a_i w+_ij at the linear layer, GAP and conv2; ReLUs pass it."""
    h1 = torch.relu(model[0](x))
    h2 = torch.relu(model[2](h1))
    f = h2.mean((2, 3))
    wp = model[6].weight.clamp(min=0)[target]  # [N,5]
    p_f = _share(f * wp, (f * wp).sum(1, keepdim=True))  # no positive path: no mass
    p_h2 = _share(h2, h2.sum((2, 3), keepdim=True)) * p_f[:, :, None, None]
    h1 = h1.detach().requires_grad_(True)
    zp = F.conv2d(h1, model[2].weight.clamp(min=0), padding=1)
    share = torch.where(zp > 0, p_h2 / zp.clamp_min(1e-30), torch.zeros_like(zp)).detach()
    (back,) = torch.autograd.grad((zp * share).sum(), h1)
    return (h1 * back).detach()


def test_matches_the_mwp_written_out_by_hand():
    for nonneg in (False, True):
        model, x = _net(nonneg), torch.rand(3, 3, 8, 8)
        target = torch.tensor([0, 1, 3])
        fp = model_fingerprint(model)
        e = cnnlens.explain(model, x, "excitation-backprop", target=target, layer="1")
        assert same_fingerprint(fp, model_fingerprint(model))
        expected = _mwp_by_hand(model, x, target)
        torch.testing.assert_close(e.raw, expected, rtol=1e-4, atol=1e-6)
        # probability mass is conserved down to the layer: 1 per image with non-negative
        # weights; units active through their bias alone may keep some otherwise
        sums = e.raw.flatten(1).sum(1)
        if nonneg:
            torch.testing.assert_close(sums, torch.ones(3), rtol=1e-4, atol=1e-5)
        assert ((sums > 0.5) & (sums <= 1 + 1e-5)).all()


def test_maps_are_non_negative_probabilities_on_a_resnet():
    torch.manual_seed(2)
    model = nets.create("resnet8", num_classes=5).eval()
    x = torch.randn(4, 3, 32, 32)
    fp = model_fingerprint(model)
    e = cnnlens.explain(model, x, "excitation-backprop")
    assert same_fingerprint(fp, model_fingerprint(model))
    assert e.maps.shape == (4, 1, 32, 32) and (e.maps >= 0).all()
    assert (e.raw >= -1e-7).all()
    sums = e.raw.flatten(1).sum(1)
    assert ((sums > 0) & (sums <= 1 + 1e-4)).all()


def test_contrastive_mwp_is_the_target_minus_its_dual():
    model, x = _net(), torch.rand(2, 3, 8, 8)
    target = torch.tensor([3, 3])  # a class whose dual (negated weights) has active inputs
    fp = model_fingerprint(model)
    c = cnnlens.explain(model, x, "excitation-backprop", target=target, layer="1", contrastive=True)
    assert same_fingerprint(fp, model_fingerprint(model))
    dual = _net()
    with torch.no_grad():
        dual[6].weight.neg_()
    against = _mwp_by_hand(dual, x, target)
    assert (against.flatten(1).sum(1) > 0.5).all()  # the dual takes mass: a real difference
    expected = _mwp_by_hand(model, x, target) - against
    torch.testing.assert_close(c.raw, expected, rtol=1e-4, atol=1e-6)

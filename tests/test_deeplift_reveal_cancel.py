"""DeepLIFT's RevealCancel rule (Shrikumar et al. 2017, section 3.5.3): against a slow
per-neuron computation from the paper's equations on an MLP, and summation-to-delta
on a CNN with the operations the rule carries parts through (convolution,
BatchNorm, residual sum, max and average pooling). The families are in
tests/test_attribution_families.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlens.attribution import explain
from cnnlens.errors import InputError
from cnnlens.hooks import model_fingerprint, same_fingerprint


def _parts(w: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear rule (section 3.5.1), term by term: the positive and negative sums."""
    pos, neg = torch.zeros(w.shape[0], dtype=d.dtype), torch.zeros(w.shape[0], dtype=d.dtype)
    for j in range(w.shape[0]):
        for i in range(w.shape[1]):
            term = w[j, i] * d[i]
            if term > 0:
                pos[j] += term
            elif term < 0:
                neg[j] += term
    return pos, neg


def _multipliers(z0, pos, neg):
    """RevealCancel's m+ and m- for a ReLU (section 3.5.3)."""
    f = torch.relu
    up = 0.5 * (f(z0 + pos) - f(z0)) + 0.5 * (f(z0 + pos + neg) - f(z0 + neg))
    down = 0.5 * (f(z0 + neg) - f(z0)) + 0.5 * (f(z0 + pos + neg) - f(z0 + pos))
    zero = torch.zeros_like(pos)
    return (torch.where(pos.abs() < 1e-10, zero, up / pos),
            torch.where(neg.abs() < 1e-10, zero, down / neg))  # fmt: skip


def _to_parts(w, d, j, i, m_pos, m_neg):
    """Multiplier of input i through unit j: the part its term went to (half each at 0)."""
    term = w[j, i] * d[i]
    m = m_pos[j] if term > 0 else m_neg[j] if term < 0 else 0.5 * (m_pos[j] + m_neg[j])
    return w[j, i] * m


def slow_reveal_cancel(model: nn.Sequential, x, x0, t: int) -> torch.Tensor:
    """Contributions of each input to logit ``t`` of Linear-ReLU-Linear-ReLU-Linear, one
    neuron and one weight at a time (chain rule for multipliers, section 3.5.4)."""
    l1, l2, l3 = model[1], model[3], model[5]
    dx = x - x0
    z10 = l1(x0)
    m1p, m1n = _multipliers(z10, *_parts(l1.weight, dx))
    dy1 = torch.relu(l1(x)) - torch.relu(z10)
    m2p, m2n = _multipliers(l2(torch.relu(z10)), *_parts(l2.weight, dy1))
    units, inputs = l2.weight.shape
    to_y1 = [sum(_to_parts(l2.weight, dy1, k, j, m2p, m2n) * l3.weight[t, k]
                 for k in range(units)) for j in range(inputs)]  # fmt: skip
    return torch.stack([
        sum(_to_parts(l1.weight, dx, j, i, m1p, m1n) * to_y1[j] for j in range(len(to_y1)))
        * dx[i]
        for i in range(len(dx))
    ])  # fmt: skip


def test_equals_slow_reference_on_an_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(),
                          nn.Linear(4, 3)).double()  # fmt: skip
    x = torch.randn(3, 1, 2, 3, dtype=torch.float64)
    x0 = torch.randn(1, 1, 2, 3, dtype=torch.float64)
    e = explain(model, x, "deeplift", rule="reveal-cancel", baseline=x0.expand(3, -1, -1, -1),
                target=1)  # fmt: skip
    rescale = explain(model, x, "deeplift", baseline=x0.expand(3, -1, -1, -1), target=1)
    with torch.no_grad():
        for n in range(3):
            ref = slow_reveal_cancel(model, x[n].flatten(), x0[0].flatten(), 1)
            assert torch.allclose(e.raw[n].flatten(), ref, rtol=1e-9, atol=1e-12)
            assert torch.allclose(ref.sum(), model(x[n : n + 1])[0, 1] - model(x0)[0, 1])
    assert not torch.allclose(e.raw, rescale.raw, atol=1e-6)  # the rule is not Rescale


def test_cancelling_inputs_are_revealed():
    """y = relu(x1 - x2) at x = (1, 1), reference 0: Rescale gives both 0; RevealCancel
    gives x1 +1/2 and x2 -1/2 (the paper's motivating case, section 3.5.3)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 1, bias=False), nn.ReLU()).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -1.0]]))
    x = torch.ones(1, 1, 1, 2, dtype=torch.float64)
    e = explain(model, x, "deeplift", rule="reveal-cancel", target=0)
    assert torch.allclose(e.raw.flatten(), torch.tensor([0.5, -0.5], dtype=torch.float64))
    assert explain(model, x, "deeplift", target=0).raw.abs().max() == 0


class SmallResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(2))  # fmt: skip
        self.conv = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)  # reused
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        x = self.stem(x)
        out = self.bn(self.conv(x))
        out += x
        return self.head(self.relu(out))


def test_summation_to_delta_on_a_cnn():
    torch.manual_seed(1)
    model = SmallResNet().double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(-1, 1)  # negative scales swap the parts
                m.running_mean.normal_()
    model.eval()
    x = torch.randn(3, 3, 12, 12, dtype=torch.float64)
    x0 = 0.3 * torch.randn(3, 3, 12, 12, dtype=torch.float64)  # a reference per image
    before = model_fingerprint(model)
    e = explain(model, x, "deeplift", rule="reveal-cancel", baseline=x0, target=2)
    assert same_fingerprint(before, model_fingerprint(model))
    base = explain(model, x, "deeplift", baseline=x0, target=2)
    with torch.no_grad():
        expected = model(x)[:, 2] - model(x0)[:, 2]
    assert torch.allclose(e.raw.flatten(1).sum(1), expected, rtol=1e-9, atol=1e-12)
    assert e.extras["delta"].abs().max() < 1e-9 * expected.abs().max()
    assert not torch.allclose(e.raw, base.raw, atol=1e-6)


def test_layer_attribution_is_refused():
    model = SmallResNet().eval()
    with pytest.raises(InputError, match="reveal-cancel"):
        explain(model, torch.randn(1, 3, 12, 12), "deeplift", rule="reveal-cancel", at="conv")
    with pytest.raises(InputError):
        explain(model, torch.randn(1, 3, 12, 12), "deeplift", rule="reveal")

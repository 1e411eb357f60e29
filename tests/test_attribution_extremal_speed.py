"""Extremal perturbation's fast paths against the plain formulas they replace."""

from __future__ import annotations

import pytest
import torch

from cnnlens.attribution.extremal import SmoothMaskGenerator, _SmoothMax, area_gap


@pytest.mark.parametrize(("shape", "sigma"), [((10, 10), 1.5), ((9, 12), 1.3)])
def test_smooth_max_gradcheck(shape, sigma):
    gen = SmoothMaskGenerator(shape, 1, sigma, torch.device("cpu"))
    assert gen.shared
    params = torch.rand(2, 1, *gen.shape_in, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: _SmoothMax.apply(p, gen), (params,))


@pytest.mark.parametrize(("shape", "sigma"), [((32, 32), 3.0), ((28, 28), 2.625), ((20, 26), 1.9)])
def test_smooth_max_matches_unfold_softmax(shape, sigma):
    """Same values and gradients as TorchRay's unfold + softmax formula (float rounding)."""
    gen = SmoothMaskGenerator(shape, 1, sigma, torch.device("cpu"))
    gen.weight = gen.weight.double()
    torch.manual_seed(0)
    params = torch.rand(3, 1, *gen.shape_in, dtype=torch.float64)
    params[:, :, 2:8, 3:9] = 1.0  # saturated parameters, as during the optimisation
    params[:, :, -4:, -5:] = 0.0
    grad_out = torch.randn(3, 1, *gen.shape_out, dtype=torch.float64)
    results = []
    for fn in (gen._generate_unfolded, lambda p: _SmoothMax.apply(p, gen)):
        p = params.clone().requires_grad_(True)
        y = fn(p)
        y.backward(grad_out)
        results.append((y.detach(), p.grad))
    (y0, g0), (y1, g1) = results
    torch.testing.assert_close(y1, y0, rtol=0, atol=1e-6)
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-5)


def test_generator_uses_the_fast_path_only_where_the_weight_is_shared():
    assert SmoothMaskGenerator((32, 32), 1, 3.0, torch.device("cpu")).shared
    assert not SmoothMaskGenerator((64, 64), 2, 6.0, torch.device("cpu")).shared


@pytest.mark.parametrize("ties", [False, True])
def test_area_gap_matches_the_sorted_formula(ties):
    torch.manual_seed(0)
    mask = torch.rand(4, 300)
    if ties:
        mask[:, 50:280] = 0.75  # equal values across the kept / dropped boundary
    reference = torch.ones(1, 300)
    reference[:, :270] = 0
    values = []
    for fn in (area_gap, lambda m, r: ((m.sort(dim=1)[0] - r) ** 2).mean(1)):
        m = mask.clone().requires_grad_(True)
        loss = fn(m, reference)
        (loss * torch.arange(1.0, 5.0)).sum().backward()
        values.append((loss.detach(), m.grad))
    torch.testing.assert_close(values[0][0], values[1][0])
    torch.testing.assert_close(values[0][1], values[1][1], rtol=0, atol=0)

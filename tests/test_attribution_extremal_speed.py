"""Extremal perturbation's fast paths against the plain formulas they replace."""

from __future__ import annotations

import pytest
import torch

from cnnlens.attribution.extremal import (
    MomentumSGD,
    Pyramid,
    SmoothMaskGenerator,
    _SmoothMax,
    area_gap,
)


@pytest.mark.parametrize(("shape", "sigma"), [((10, 10), 1.5), ((9, 12), 1.3)])
def test_smooth_max_gradcheck(shape, sigma):
    def fresh():  # gradcheck interleaves forwards; each keeps its own workspace
        return SmoothMaskGenerator(shape, 1, sigma, torch.device("cpu"))

    gen = fresh()
    assert gen.shared
    params = torch.rand(2, 1, *gen.shape_in, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: _SmoothMax.apply(p, fresh()), (params,))


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


def test_pyramid_interpolation_matches_the_two_level_formula():
    """``level[k] + frac (level[k+1] - level[k])`` equals TorchRay's
    ``(1 - frac) level[k] + frac level[k+1]``, gradient included (none at mask 1)."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    pyramid = Pyramid(x, 8, 2.0)
    mask = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    mask[:, :, :3] = 1.0
    mask[:, :, -2:] = 0.0
    levels = pyramid.levels

    def plain(m):
        w = m[:, None] * (levels.shape[1] - 1)
        k = w.floor()
        w = w - k
        k = k.long().expand(-1, 1, levels.shape[2], -1, -1)
        y0 = levels.gather(1, k)
        y1 = levels.gather(1, (k + 1).clamp(max=levels.shape[1] - 1))
        return ((1 - w) * y0 + w * y1)[:, 0]

    grad_out = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    results = []
    for fn in (plain, pyramid.apply):
        m = mask.clone().requires_grad_(True)
        y = fn(m)
        y.backward(grad_out)
        results.append((y.detach(), m.grad))
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])
    assert (results[1][1][:, :, :3] == 0).all()


def test_momentum_sgd_follows_torch_sgd_exactly():
    torch.manual_seed(0)
    start = torch.rand(3, 1, 5, 5)
    grads = [torch.randn(3, 1, 5, 5) for _ in range(6)]
    ours, theirs = start.clone(), start.clone().requires_grad_(True)
    sgd, opt = (
        MomentumSGD(0.01, 0.9, 0.9),
        torch.optim.SGD([theirs], lr=0.01, momentum=0.9, dampening=0.9),
    )
    for g in grads:
        sgd.step(ours, g)
        theirs.grad = g.clone()
        opt.step()
        assert torch.equal(ours, theirs.detach())

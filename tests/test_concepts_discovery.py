"""Unsupervised concept discovery (NMF, CRAFT-style): planted factorisations recovered,
coefficients, importance against a direct computation, errors, the shapes match count."""

from __future__ import annotations

import pytest
import torch

from cnnlens import nets
from cnnlens.analysis.concepts.discovery import (
    ConceptBank,
    coefficients,
    concept_match,
    discover_concepts,
    nmf,
)
from cnnlens.data import load
from cnnlens.data.base import TensorDataset
from cnnlens.errors import InputError, LayerError
from test_concepts_crp import images, plain_cnn


def planted(p: int = 400, c: int = 12, k: int = 3):
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(p, k, generator=gen, dtype=torch.float64) ** 3  # sparse-ish codes
    w = torch.rand(k, c, generator=gen, dtype=torch.float64) ** 4  # distinct directions
    return u, w


def test_nmf_recovers_a_planted_factorisation():
    u0, w0 = planted()
    a = u0 @ w0
    u, w = nmf(a, 3, iters=200)
    assert float((a - u @ w).norm() / a.norm()) < 2e-2
    cos = torch.nn.functional.normalize(w, dim=1) @ torch.nn.functional.normalize(w0, dim=1).T
    assert sorted(cos.max(1).values.tolist())[0] > 0.98  # each found direction is a planted one
    assert (u >= 0).all() and (w >= 0).all()


def test_coefficients_solve_the_fixed_basis_problem():
    u0, w0 = planted()
    u = coefficients(u0 @ w0, w0, iters=200)
    assert torch.allclose(u, u0, atol=2e-2)
    assert (u >= 0).all()


def test_discover_concepts_on_a_small_cnn():
    model = plain_cnn()
    data = TensorDataset(images(12), torch.zeros(12, dtype=torch.long), classes=list("abcd"),
                         mean=(0, 0, 0), std=(1, 1, 1))  # fmt: skip
    bank = discover_concepts(model, data, "3", 4, iters=200)
    assert bank.directions.shape == (4, 8) and (bank.directions >= 0).all()
    assert torch.allclose(bank.directions.norm(dim=1), torch.ones(4), atol=1e-5)
    assert 0 <= bank.error < 1
    maps = bank.coefficients(model, images(2))
    assert maps.shape == (2, 4, 16, 16) and (maps >= 0).all()
    with pytest.raises(LayerError, match="negative"):
        discover_concepts(model, data, "2", 4)  # a convolution's output, before its ReLU
    with pytest.raises(InputError):
        discover_concepts(model, data, "3", 0)
    with pytest.raises(InputError, match="channels"):
        discover_concepts(model, data, "3", 9)


def test_importance_is_gradient_times_coefficient():
    """With the channels themselves as the bank (unit directions), the coefficients are
    the activations, so the importances add up to gradient x activation at the layer."""
    model, x = plain_cnn(), images(3)
    bank = ConceptBank("3", torch.eye(8), 0.0, 0)
    got = bank.importance(model, x, target=1)
    store = {}
    handle = model[3].register_forward_hook(lambda _m, _i, out: store.update(a=out))
    logits = model(x)
    handle.remove()
    (g,) = torch.autograd.grad(logits[:, 1].sum(), store["a"])
    expected = (g * store["a"]).sum((2, 3)).detach()
    assert torch.allclose(got, expected, atol=1e-4 * float(expected.abs().max()))


def test_concept_match_counts_discovered_and_random_directions_alike():
    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=8).eval()
    test = load("shapes", split="test", n=24)
    bank = discover_concepts(model, test, "layer3", 3, iters=100)
    out = concept_match(model, test, bank, concepts=["object", "background", "striped"])
    for name in ("discovered", "random"):
        assert 0 <= out[name]["matched"] <= 3 and len(out[name]["labels"]) == 3
        matched = [iou > out["iou_threshold"] for iou in out[name]["best_iou"]]
        assert sum(matched) == out[name]["matched"]

"""Unsupervised concept discovery (NMF, CRAFT-style): planted factorisations recovered,
coefficients, importance against a direct computation, errors, the shapes match count."""

from __future__ import annotations

import pytest
import torch

from cnnlens import nets
from cnnlens.analysis.concepts.discovery import (
    ConceptBank,
    _sae_codes,
    coefficients,
    concept_match,
    discover_concepts,
    nmf,
    topk_sae,
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


def _data(n: int = 12):
    return TensorDataset(images(n), torch.zeros(n, dtype=torch.long), classes=list("abcd"),
                         mean=(0, 0, 0), std=(1, 1, 1))  # fmt: skip


def test_topk_sae_learns_keeps_k_codes_and_unit_decoder_rows():
    u0, w0 = planted(p=600, c=12, k=4)
    a = u0 @ w0
    sae, (before, after) = topk_sae(a, 6, active=2, steps=400, seed=0)
    assert after < 0.5 * before  # training reduces the reconstruction error from its draw
    codes = _sae_codes(sae, a)
    pre = torch.relu((a.float() / sae["scale"] - sae["b_dec"]) @ sae["w_enc"] + sae["b_enc"])
    positive = (pre > 0).sum(1)
    assert torch.equal((codes > 0).sum(1), positive.clamp(max=2))  # top-k of the ReLU codes
    assert float((positive >= 2).float().mean()) > 0.9  # so nearly every row has exactly 2
    kept = codes > 0
    assert torch.equal(codes[kept], pre[kept])  # kept codes are the encoder's, unchanged
    assert torch.allclose(sae["decoder"].norm(dim=1), torch.ones(6), atol=1e-5)


def test_sae_bank_is_seeded_and_has_nmf_s_interface():
    model, data = plain_cnn(), _data()
    sae = discover_concepts(model, data, "3", 4, method="sae", active=1, steps=150, seed=3)
    again = discover_concepts(model, data, "3", 4, method="sae", active=1, steps=150, seed=3)
    other = discover_concepts(model, data, "3", 4, method="sae", active=1, steps=150, seed=4)
    assert torch.equal(sae.directions, again.directions) and sae.error == again.error
    assert not torch.equal(sae.directions, other.directions)
    assert sae.error < sae.initial_error
    nmf_bank = discover_concepts(model, data, "3", 4, iters=100)
    x = images(2)
    for bank in (sae, nmf_bank):
        assert bank.directions.shape == (4, 8) and bank.k == 4
        maps = bank.coefficients(model, x)
        assert maps.shape == (2, 4, 16, 16) and (maps >= 0).all()
        assert bank.importance(model, x, target=1).shape == (2, 4)
        refs = bank.references(model, data, top=3)
        assert [len(row) for row in refs["images"]] == [3] * 4
        for j, (row, values) in enumerate(zip(refs["images"], refs["values"], strict=True)):
            peaks = bank.coefficients(model, data.tensors(row)[0])[:, j].flatten(1).max(1)
            assert values == sorted(values, reverse=True)
            assert torch.allclose(peaks.values, torch.tensor(values), rtol=1e-4, atol=1e-6)
            every = bank.coefficients(model, data.tensors()[0])[:, j].flatten(1).max(1).values
            assert values[0] == pytest.approx(float(every.max()), rel=1e-4)  # the best image
        assert set(bank.to_dict()) >= {"layer", "method", "k", "error", "directions"}
    assert sae.coefficients(model, x).gt(0).sum(1).max() <= 1  # active=1: one code a position
    with pytest.raises(InputError, match="active"):
        discover_concepts(model, data, "3", 4, method="sae", active=5)
    with pytest.raises(InputError, match="method"):
        discover_concepts(model, data, "3", 4, method="pca")
    discover_concepts(model, data, "2", 4, method="sae", steps=5)  # signed layers are fine


def test_cav_cosines_is_the_cosine_in_the_flattened_space():
    """A direction spread over every position, against each CAV as learned, by brute force."""
    from cnnlens.analysis import TCAV, shapes_concepts
    from cnnlens.analysis.concepts.linking import cav_cosines

    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=8).eval()
    val = load("shapes", split="val", n=60)
    sets = shapes_concepts(val, ["striped", "filled"], n=10, seed=0)
    tcav = TCAV("layer3", n_random=2, seed=0).fit(model, sets, random=val)
    directions = torch.rand(3, 64, generator=torch.Generator().manual_seed(1)) - 0.3
    got = cav_cosines(tcav, directions)
    positions = tcav.n_features_ // 64
    for i, d in enumerate(directions.double()):
        spread = d[:, None].expand(64, positions).reshape(-1)
        for j, name in enumerate(tcav.concepts_):
            cos = [float(torch.nn.functional.cosine_similarity(spread, cav.vector, dim=0))
                   for cav in tcav.cavs_[name]]  # fmt: skip
            assert got[i, j] == pytest.approx(sum(cos) / len(cos), abs=1e-9)

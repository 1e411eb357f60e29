"""Noise ablation (paper 002, Table 8) and influential activation maps (Table 7)."""

from __future__ import annotations

import pytest
import torch

from cnnlens.hooks import HookSet, model_fingerprint, same_fingerprint
from cnnlens.studies.decompose import (
    InfluentialFeatures,
    energy_table,
    in_mask_energy,
    influential_maps,
    noise_ablation,
)
from cnnlens.studies.decompose.ablation import ablation_mask, overwrite
from cnnlens.studies.decompose.maps import channel_group_maps


@pytest.fixture(scope="module")
def fitted(trained_shapes):
    est = InfluentialFeatures(k1=5, k2=5).fit(
        trained_shapes.model, trained_shapes.train.subset(range(1500))
    )
    return trained_shapes.model, est, trained_shapes.test.subset(range(400))


def test_masks_pick_the_right_features(fitted):
    _model, est, _test = fitted
    classes = torch.arange(8).repeat(5)
    gen = torch.Generator().manual_seed(0)
    inside = ablation_mask(est, classes, "influential", gen)
    assert torch.equal(inside, est.mask_[classes])
    outside = ablation_mask(est, classes, "non_influential", gen)
    assert (outside.sum(1) == 5).all() and not (outside & inside).any()


def test_ablation_equals_a_forward_pre_hook_on_the_head(fitted):
    model, est, test = fitted
    before = model_fingerprint(model)
    result = noise_ablation(model, est, test, seeds=[3])
    assert same_fingerprint(before, model_fingerprint(model))
    x, y = test.tensors()
    # the same overwrite done by a pre-hook during a real forward
    gen = torch.Generator().manual_seed(3 * 2 + 0)
    mask = ablation_mask(est, y, "influential", gen)
    noise = torch.randn(mask.shape, generator=gen)
    model.eval()
    with torch.no_grad(), HookSet() as hooks:
        hooks.forward_pre(model.head, lambda _m, inp: (torch.where(mask, noise, inp[0]),))
        hooked = model(x)
    expected = float((hooked.argmax(1) == y).float().mean())
    assert result["overall"]["influential_mean"] == pytest.approx(expected, abs=1e-6)
    assert result["overall"]["influential_std"] == 0.0
    assert result["overall"]["images"] == 400 and len(result["per_class"]) == 8


def test_influential_features_are_essential(fitted):
    model, est, test = fitted
    result = noise_ablation(model, est, test, seeds=[0, 1])
    overall = result["overall"]
    # accuracy with the influential features replaced by noise 0.564-0.590, with as many
    # others replaced 0.949-0.962, over training seeds 0 (ATEN_CPU_CAPABILITY default and
    # avx2) and 1 (avx2)
    assert overall["influential_mean"] < overall["non_influential_mean"]
    again = noise_ablation(model, est, test, seeds=[0, 1])
    assert again == result


def test_overwrite_and_group_maps_by_hand():
    feats = torch.ones(2, 4)
    mask = torch.tensor([[True, False, False, False], [False, False, False, False]])
    out = overwrite(feats, mask, torch.Generator().manual_seed(0))
    assert out[0, 0] != 1 and (out[0, 1:] == 1).all() and (out[1] == 1).all()
    acts = torch.zeros(1, 3, 2, 2)
    acts[0, 0] = 3.0
    acts[0, 1] = 1.0
    maps = channel_group_maps(acts, torch.tensor([[True, False, False]]), (2, 2))
    assert torch.allclose(maps[0, 0], torch.full((2, 2), 3.0))
    assert torch.allclose(maps[0, 1], torch.full((2, 2), 0.5))
    assert torch.allclose(maps[0, 2], torch.full((2, 2), 4 / 3))


def test_in_mask_energy_by_hand():
    maps = torch.tensor([[[[1.0, 3.0], [-2.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    masks = torch.tensor([[[[True, False], [True, False]]], [[[True, True], [True, True]]]])
    share = in_mask_energy(maps, masks)
    assert share[0] == pytest.approx(0.25) and torch.isnan(share[1])


def test_maps_and_energy_on_trained_model(fitted):
    model, est, test = fitted
    before = model_fingerprint(model)
    maps = influential_maps(model, est, test, indices=torch.arange(10))
    assert maps["influential"].shape == (10, 1, 32, 32)
    table = energy_table(model, est, test)
    assert same_fingerprint(before, model_fingerprint(model))
    for kind in ("influential", "non_influential", "all"):
        assert 0 <= table[kind] <= 1
    assert 0 < table["mask_area"] < 1

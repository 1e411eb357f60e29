"""DRIB's further baselines: FPGM and Taylor pruning (static, Torch-Pruning) and Feature
Boosting and Suppression (dynamic), at one MAC budget, in one table with CPU latency."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnlens import nets
from cnnlens.cost import macs
from cnnlens.errors import ConfigError
from cnnlens.hooks import model_fingerprint, same_fingerprint
from cnnlens.studies.drib.baselines import prune_to_macs, taylor_scores
from cnnlens.studies.drib.fbs import (
    FBSConv,
    density_for,
    fbs,
    fbs_layers,
    fbs_macs,
    set_density,
    upper_macs,
)
from helpers import with_bn_statistics


def _data(n=32, size=16, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_fpgm_keeps_the_filters_farthest_from_the_others():
    model = with_bn_statistics(nets.create("vgg11", num_classes=4))
    result = prune_to_macs(model, (3, 32, 32), method="fpgm", reduction=40, steps=5)
    conv, kept = model.features[0], result.model.features[0]
    k = kept.out_channels
    assert k < conv.out_channels and result.macs <= result.budget
    w = conv.weight.detach().flatten(1).double()
    distance = torch.cdist(w, w).sum(1)  # He et al. 2019: near the geometric median goes
    top = distance.topk(k).indices.sort().values
    assert torch.equal(kept.weight, conv.weight[top])
    # not the L1 choice (the criteria differ on these weights)
    l1 = conv.weight.abs().sum((1, 2, 3)).topk(k).indices.sort().values
    assert not torch.equal(top, l1)


def test_taylor_scores_are_molchanovs_per_batch_squares_and_leave_the_model():
    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=4))
    before = model_fingerprint(model)
    x, y = _data(24)
    scores = taylor_scores(model, (x, y), batches=3, batch_size=8)
    assert same_fingerprint(before, model_fingerprint(model))
    assert all(p.grad is None for p in model.parameters())
    reference = torch.zeros(model.conv1.out_channels, dtype=torch.float64)
    for b in range(3):
        model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x[8 * b : 8 * b + 8]), y[8 * b : 8 * b + 8])
        (g,) = torch.autograd.grad(loss, [model.conv1.weight])
        reference += (g * model.conv1.weight).detach().flatten(1).sum(1).double().pow(2)
    torch.testing.assert_close(scores["conv1"].double(), reference, rtol=1e-4, atol=1e-12)


def test_taylor_prunes_by_one_global_threshold_on_its_scores():
    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=4))
    x, y = _data(32)
    result = prune_to_macs(model, (3, 16, 16), method="taylor", reduction=30, data=(x, y), steps=6)
    assert result.macs <= result.budget
    scores = taylor_scores(model, (x, y))
    kept, removed = [], []
    for name in ("layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1"):
        old = model.get_submodule(name).weight.flatten(1)
        new = result.model.get_submodule(name).weight.flatten(1)
        # which filters stayed: rows of the old weight found in the new one
        stay = torch.tensor([any(torch.equal(o, r) for r in new) for o in old])
        kept += scores[name][stay].tolist()
        removed += scores[name][~stay].tolist()
    assert removed and kept and max(removed) <= min(kept)
    with pytest.raises(ConfigError, match="data"):
        prune_to_macs(model, (3, 16, 16), method="taylor", reduction=30)


def test_fbs_layer_keeps_the_top_saliencies_and_scales_the_normalised_output():
    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=4))
    dynamic = fbs(model, density=0.3).eval()
    layer = dynamic.layer2[0].conv1
    assert isinstance(layer, FBSConv) and layer.keep == math.ceil(0.3 * 32)
    x = torch.randn(5, 16, 8, 8)
    with torch.no_grad():
        out = layer(x)
        s = torch.relu(layer.saliency(x.abs().mean((2, 3))))
        dense = layer.bn(layer.conv(x))
    for i in range(5):
        top = s[i].topk(layer.keep).indices
        pi = torch.zeros_like(s[i])
        pi[top] = s[i][top]
        torch.testing.assert_close(out[i], dense[i] * pi[:, None, None])
    assert ((out.abs().sum((2, 3)) > 0).sum(1) <= layer.keep).all()
    # the original is untouched
    assert isinstance(model.layer2[0].conv1, nn.Conv2d)


def test_fbs_macs_count_active_channels_like_drib_and_the_density_meets_the_budget():
    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=4))
    dynamic = fbs(model).eval()
    x, _ = _data(6)
    full = macs(model, (3, 16, 16))
    set_density(dynamic, 1.0)
    counted = fbs_macs(dynamic, x)
    predictors = sum(
        m.saliency.in_features * m.saliency.out_features for m in fbs_layers(dynamic).values()
    )
    # all channels active (saliency ~1 at the start): the model's MACs plus the predictors'
    assert counted.before == full.total
    torch.testing.assert_close(
        counted.per_input, torch.full((6,), float(full.total + predictors), dtype=torch.float64)
    )
    budget = int(0.6 * full.total)
    d = density_for(dynamic, (3, 16, 16), budget)
    assert upper_macs(dynamic, (3, 16, 16)) <= budget
    set_density(dynamic, min(1.0, d + 0.02))
    assert upper_macs(dynamic, (3, 16, 16)) > budget or d == 1.0  # the largest such d
    set_density(dynamic, d)
    counted = fbs_macs(dynamic, x)
    assert (counted.per_input <= budget).all()
    # by hand for one block: conv1 keeps k of 16 outputs, conv2 reads those k inputs
    k = dynamic.layer1[0].conv1.keep
    layers = full.layers
    assert counted.layers["layer1.0.conv1.conv"] == pytest.approx(layers["layer1.0.conv1"] * k / 16)
    assert counted.layers["layer1.0.conv2"] == pytest.approx(layers["layer1.0.conv2"] * k / 16)


def test_run_baselines_gives_static_and_dynamic_rows_at_one_budget_with_latency():
    from cnnlens.studies.drib.baseline_study import run_baselines
    from cnnlens.train import OptimizerConfig, TrainConfig

    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=4))
    before = model_fingerprint(model)
    train, test = _data(48), _data(16, seed=1)
    config = TrainConfig(epochs=1, batch_size=16, optimizer=OptimizerConfig(lr=0.01), augment=())
    study = run_baselines(
        model, train, test, methods=("fpgm", "taylor", "sfp", "fbs"), reduction=40, epochs=1,
        config=config, steps=5, latency_batch=8, latency_repeats=2,
    )  # fmt: skip
    assert same_fingerprint(before, model_fingerprint(model))
    rows = {r.method: r for r in study.rows}
    assert list(rows) == ["unpruned", "fpgm", "taylor", "sfp", "fbs"]
    assert [rows[m].kind for m in rows] == ["static"] * 4 + ["dynamic"]
    assert study.budget == int(rows["unpruned"].macs * 0.6)
    sfp = study.models["sfp"]  # the zeroed filters were the ones cut: none of the kept is zero
    assert macs(sfp, (3, 16, 16)).total == rows["sfp"].macs
    for name, m in sfp.named_modules():
        if isinstance(m, nn.Conv2d):
            assert (m.weight.flatten(1).norm(dim=1) > 0).all(), name
    for name in ("fpgm", "taylor", "sfp", "fbs"):
        assert rows[name].macs <= study.budget and 0 <= rows[name].accuracy <= 1
        assert rows[name].reduction >= 40
    assert all(r.latency_ms is not None and r.latency_ms > 0 for r in study.rows)
    assert study.latency_batch == 8
    table = study.markdown()
    assert "| fbs | dynamic |" in table and "latency (ms, batch 8)" in table


def test_soft_zeroing_zeroes_the_smallest_filters_and_they_may_come_back():
    from cnnlens.studies.drib.baselines import soft_zeroing, zero_smallest_filters

    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=4)
    conv = model.layer1[0].conv1
    norms = conv.weight.detach().flatten(1).norm(dim=1)
    zero_smallest_filters(model, {"layer1.0.conv1": 5})
    zeroed = (conv.weight.flatten(1).norm(dim=1) == 0).nonzero().flatten()
    assert torch.equal(zeroed.sort().values, norms.topk(5, largest=False).indices.sort().values)
    assert ((conv.weight.flatten(1).norm(dim=1) == 0).sum()) == 5
    # training moves the zeroed filters again (soft); the callback zeroes the smallest again
    with torch.no_grad():
        conv.weight[zeroed[0]] += 10.0  # now among the largest
    soft_zeroing({"layer1.0.conv1": 5})(1, model, {})
    assert conv.weight[zeroed[0]].abs().sum() > 0
    assert ((conv.weight.flatten(1).norm(dim=1) == 0).sum()) == 5


def test_cutting_the_zeroed_filters_changes_no_output():
    from cnnlens.studies.drib.baselines import (
        default_ignored,
        prune_copy,
        removed_filters,
        zero_smallest_filters,
    )

    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=4))
    pruned = prune_to_macs(model, (3, 16, 16), method="sfp", reduction=40, steps=5)
    counts = removed_filters(model, pruned.model)
    assert counts and all(k > 0 for k in counts.values())
    soft = with_bn_statistics(nets.create("resnet8", num_classes=4))
    soft.load_state_dict(model.state_dict())
    zero_smallest_filters(soft, counts)
    assert soft.layer1[0].bn1.weight.eq(0).sum() == counts["layer1.0.conv1"]
    cut = prune_copy(
        soft, torch.zeros(1, 3, 16, 16), method="sfp", ratio=pruned.ratio,
        ignored=default_ignored(model),
    )  # fmt: skip
    assert removed_filters(model, cut) == counts
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(cut.eval()(x), soft.eval()(x), rtol=1e-5, atol=1e-5)

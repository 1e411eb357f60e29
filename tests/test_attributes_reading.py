"""cnnlens.studies.channel_roles: reading the network, pruning, robustness grid, predictability.

A small random network with BatchNorm statistics of a trained one stands in: each check
compares against a reference computed another way (numpy, a pruned model run on its own,
the untransformed network), so none needs training.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnlens
from cnnlens.errors import DataError, InputError
from cnnlens.studies.channel_roles.network import AttributeNetwork, PlainAttributeCNN
from cnnlens.studies.channel_roles.predictability import (
    attention_predictability,
    plain_predictability,
)
from cnnlens.studies.channel_roles.pruning import (
    SemanticPruner,
    prune_channels,
    pruning_sweep,
    random_order,
    run_accuracy,
)
from cnnlens.studies.channel_roles.reading import ChannelRoles, channel_masks
from cnnlens.studies.channel_roles.robustness import robustness_grid
from helpers import with_bn_statistics

N = 48


@pytest.fixture(scope="module")
def data():
    return cnnlens.data.load("shapes", split="test", size=16, n=N)


@pytest.fixture(scope="module")
def net(data):
    torch.manual_seed(0)
    model = AttributeNetwork(num_classes=10, channels=(4, 8, 8, 12))
    model.attribute_names = list(data.attribute_names)
    with torch.no_grad():  # a head bias near the decision boundary so edits move accuracy
        model.heads.bias.zero_()
    return with_bn_statistics(model, 1)


def test_channel_roles_against_numpy(net, data):
    roles = ChannelRoles(top=3, n=None).fit(net, data)
    x, _ = data.tensors()
    with torch.no_grad():
        f = net.features(x)
        masks = net.attention(f)
    mask_means = masks.double().mean(dim=(0, 3, 4))  # [K,C]
    torch.testing.assert_close(roles.mask_means_, mask_means, rtol=1e-5, atol=1e-6)
    assert roles.top_channels_.tolist() == mask_means.topk(3, dim=1).indices.tolist()
    ref = np.corrcoef(mask_means.numpy())
    np.testing.assert_allclose(roles.attribute_correlation_.numpy(), ref, atol=1e-6)
    pooled = f.double().mean(dim=(2, 3))
    ref_ch = np.corrcoef(pooled.T.numpy())
    np.testing.assert_allclose(
        roles.channel_correlation_.numpy(), ref_ch, atol=1e-4
    )  # float32 pooling
    ref_lab = np.corrcoef(data.attributes.double().T.numpy())
    np.testing.assert_allclose(roles.label_correlation_.numpy(), np.nan_to_num(ref_lab), atol=1e-9)
    top5 = roles.most_correlated(5)
    k = data.attribute_names.index("red")
    order = [j for j in np.argsort(-ref[k], kind="stable") if j != k][:5]
    assert top5[k].others == [data.attribute_names[j] for j in order]
    assert roles.to_dict()["most_correlated"][k]["attribute"] == "red"
    shown = channel_masks(net, x[:2], k, roles.top_channels_[k])
    torch.testing.assert_close(shown, masks[:2, k, roles.top_channels_[k]])
    with pytest.raises(InputError, match="attribute"):
        channel_masks(net, x[:2], 10, [0])
    with pytest.raises(DataError, match="no attributes"):
        ChannelRoles().fit(net, cnnlens.data.load("digits", split="test"))


def test_pruning_sweep_equals_pruned_models_run_alone(net, data):
    pruner = SemanticPruner(n=None).fit(net, data)
    assert sorted(pruner.order_) == sorted(set(pruner.order_)) and len(pruner.order_) == 11
    orders = {"semantic": [pruner.order_], "random": [random_order(12, s) for s in (0, 1)]}
    curves = pruning_sweep(net, data, orders, [0, 3, 6], n=None)
    base = run_accuracy(net, data, n=None)
    for name, curve in curves.items():
        assert curve.accuracy.shape == (len(orders[name]), 3, 10)
        for s, order in enumerate(orders[name]):
            torch.testing.assert_close(curve.accuracy[s, 0], base)
            alone = run_accuracy(prune_channels(net, order[:6]), data, n=None)
            torch.testing.assert_close(curve.accuracy[s, 2], alone)
    d = curves["random"].to_dict()
    assert len(d["mean_accuracy"]) == 3 and len(d["spread"]) == 3
    assert SemanticPruner(n=None).fit(net, data).order_ == pruner.order_  # deterministic
    roles = ChannelRoles(n=None).fit(net, data)
    given = SemanticPruner().fit(net, data, correlation=roles.channel_correlation_)
    assert given.order_ == pruner.order_
    with pytest.raises(InputError, match="counts"):
        pruning_sweep(net, data, orders, [12])


def test_robustness_grid_identity_and_noise(net, data):
    grid = robustness_grid(net, data, stds=(0.0, 0.3), transforms=((1, 0), (2, 0.2)), n=None)
    assert grid.accuracy.shape == (2, 2, 10)
    torch.testing.assert_close(grid.accuracy[0, 0], run_accuracy(net, data, n=None))
    torch.testing.assert_close(
        grid.accuracy[1, 0], run_accuracy(net.transformed(2, 0.2), data, n=None)
    )
    again = robustness_grid(net, data, stds=(0.0, 0.3), transforms=((1, 0), (2, 0.2)), n=None)
    torch.testing.assert_close(again.accuracy, grid.accuracy)  # seeded noise
    assert "| 2 | 0.2 |" in grid.table()
    with pytest.raises(InputError, match="beta"):
        robustness_grid(net, data, transforms=((2, 1.0),))
    with pytest.raises(InputError, match="n > 0"):
        robustness_grid(net, data, transforms=((0, 0.1),))


def test_predictability_points_and_scores(net, data):
    result = attention_predictability(net, data, sizes=(3, 6), repeats=2, n=None, seed=0)
    assert result.family.count("prune") == 2 * 2 * 10 and result.family.count("mask") == 4
    assert ((result.predicted >= 0) & (result.predicted <= 1)).all()
    # a pruning point equals the pruned network's accuracy change, run alone
    base = run_accuracy(net, data, n=None)
    again = attention_predictability(net, data, sizes=(3, 6), repeats=2, n=None, seed=0)
    torch.testing.assert_close(again.measured, result.measured)
    assert -1 <= result.score() <= 1 or np.isnan(result.score())
    gen = torch.Generator().manual_seed(0)
    first = torch.randperm(12, generator=gen)[:3]
    alone = run_accuracy(prune_channels(net, first.tolist()), data, n=None)
    torch.testing.assert_close(result.measured[:10], base - alone)
    torch.manual_seed(0)
    plain = with_bn_statistics(PlainAttributeCNN(num_classes=10, channels=(4, 8, 8, 12)), 1)
    pr = plain_predictability(plain, data, sizes=(3, 6), repeats=2, n=None, seed=0)
    assert len(pr.family) == len(result.family)
    w = plain.head.weight.detach().abs().double()
    expected_share = w[:, first].sum(1) / w.sum(1)
    torch.testing.assert_close(pr.predicted[:10], expected_share)
    assert set(pr.to_dict()["score_by_family"]) == {"prune", "mask"}
    weighted = result.others["mask x |head weight|"]
    roles = ChannelRoles(n=None).fit(net, data)
    imp = roles.mask_means_ * net.heads.weight.detach().double().abs()
    torch.testing.assert_close(
        weighted[:10], imp[:, first].sum(1) / imp.sum(1), rtol=1e-4, atol=1e-6
    )


def test_construction_check_tests_the_built_in_pairs_against_the_independent_ones(data):
    from cnnlens.studies.channel_roles.study import SHAPES_CORRELATED, construction_check

    names = list(data.attribute_names)
    k = len(names)
    built = {(names.index(a), names.index(b)) for a, b in SHAPES_CORRELATED}
    shared = np.full((k, k), 0.05)  # pairs correlated by construction read the same channels
    for i, j in built:
        shared[i, j] = shared[j, i] = -0.6 if (i + j) % 2 else 0.6  # |rho| counts, not the sign
    np.fill_diagonal(shared, 1.0)
    check = construction_check(names, torch.as_tensor(shared))
    red_warm = shared[names.index("red"), names.index("warm")]
    assert check["correlated_by_construction"]["red-warm"] == pytest.approx(red_warm)
    assert check["mean_abs_correlated"] == pytest.approx(0.6)
    assert check["mean_abs_independent"] == pytest.approx(0.05)
    assert check["p_larger"] < 0.001  # 7 pairs all above 10
    unrelated = np.where(np.eye(k) > 0, 1.0, 0.05)
    unrelated[names.index("large"), names.index("top")] = 0.6
    unrelated[names.index("top"), names.index("large")] = 0.6
    assert construction_check(names, unrelated.tolist())["p_larger"] > 0.5  # nested lists too
    assert construction_check([f"a{i}" for i in range(k)], shared) is None


def test_predictability_intervals_and_the_paired_difference():
    from cnnlens.studies.channel_roles.predictability import Predictability, paired_difference

    gen = torch.Generator().manual_seed(0)
    truth = torch.rand(300, generator=gen, dtype=torch.float64)
    family = ["prune"] * 270 + ["mask"] * 30
    good = Predictability("a", family, truth + 0.05 * torch.randn(300, generator=gen), truth)
    poor = Predictability("b", family, truth + 1.0 * torch.randn(300, generator=gen), truth)
    lo, hi = good.interval()
    assert lo < good.score() < hi <= 1 and good.score() > 0.95
    assert hi - lo < 0.05  # 300 points, nearly monotone
    assert good.interval(seed=1) != [lo, hi] and good.interval() == [lo, hi]  # seeded
    d = good.to_dict()
    assert d["points_by_family"] == {"prune": 270, "mask": 30}
    assert len(d["values"]["measured"]) == 300 and d["interval_by_family"]["mask"][0] < 1
    diff = paired_difference(good, poor)
    assert diff["difference"] == pytest.approx(good.score() - poor.score())
    assert 0 < diff["interval"][0] < diff["difference"] < diff["interval"][1]
    same = paired_difference(good, good)
    assert same["difference"] == 0 and same["interval"] == [0, 0]
    with pytest.raises(InputError, match="different edits"):
        paired_difference(good, Predictability("c", family[::-1], truth, truth))

"""cnnlens.studies.channel_roles: paper 003's network, loss, mask transform, pruning, saving."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens
from cnnlens.errors import ConfigError, DataError, InputError
from cnnlens.studies.channel_roles import AttributeNetwork, mask_transform, tone_curve
from cnnlens.studies.channel_roles.data import attribute_dataset
from cnnlens.studies.channel_roles.network import PlainAttributeCNN
from cnnlens.studies.channel_roles.objective import AttributeObjective, mask_l1
from cnnlens.studies.channel_roles.pruning import (
    l1_order,
    prune_channels,
    random_order,
    semantic_order,
)
from cnnlens.studies.channel_roles.training import (
    build_network,
    load_attribute_network,
    save_attribute_network,
)
from helpers import with_bn_statistics

SMALL = (4, 6, 6, 8)


def small_net(k=3, channels=SMALL, seed=0):
    torch.manual_seed(seed)
    return with_bn_statistics(AttributeNetwork(num_classes=k, channels=channels), seed)


def test_extractor_is_table1_and_keeps_the_size():
    net = AttributeNetwork(num_classes=5)
    convs = [m for m in net.extractor if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 64, 128]
    assert [c.dilation[0] for c in convs] == [1, 2, 3, 2]
    assert [c.padding[0] for c in convs] == [1, 2, 3, 2]
    assert all(c.stride == (1, 1) and c.kernel_size == (3, 3) for c in convs)
    acts = [m for m in net.extractor if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 4 and all(a.negative_slope == 0.01 for a in acts)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.extractor) == 4
    x = torch.randn(2, 3, 19, 23)
    assert net.features(x).shape == (2, 128, 19, 23)
    logits, masks = net.forward_masks(x)
    assert logits.shape == (2, 5) and masks.shape == (2, 5, 128, 19, 23)
    assert masks.min() >= 0 and masks.max() <= 1


@pytest.mark.parametrize("network", [AttributeNetwork, PlainAttributeCNN])
def test_attribute_names_must_match_the_attribute_count(network):
    net = network(num_classes=2, channels=SMALL, attribute_names=["red", "top"])
    assert net.attribute_names == ["red", "top"] and net.num_attributes == 2
    assert network(num_classes=2, channels=SMALL).attribute_names == ["0", "1"]
    with pytest.raises(ConfigError, match="3 names for 2 attributes"):
        network(num_classes=2, channels=SMALL, attribute_names=["red", "top", "left"])


def test_forward_is_eq9_written_out_per_attribute():
    net = small_net(k=3).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        f = net.features(x)
        c = f.shape[1]
        logits = net(x)
        for k in range(3):  # attribute k alone: its own conv C -> C, sigmoid, GAP, linear
            w = net.masks.weight[k * c : (k + 1) * c]
            b = net.masks.bias[k * c : (k + 1) * c]
            mask = torch.sigmoid(F.conv2d(f, w, b, padding=1))
            pooled = (mask * f).mean((2, 3))
            expected = pooled @ net.heads.weight[k] + net.heads.bias[k]
            torch.testing.assert_close(logits[:, k], expected, rtol=1e-5, atol=1e-5)


def test_loss_is_summed_bce_plus_lambda_l1():
    net = small_net(k=3).eval()
    x = torch.randn(4, 3, 16, 16)
    y = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 1, 0]])
    torch.set_grad_enabled(False)
    try:
        _check_loss(net, x, y)
    finally:
        torch.set_grad_enabled(True)
    with pytest.raises(ConfigError, match="reduction"):
        AttributeObjective(reduction="max")
    with pytest.raises(InputError, match="forward_masks"):
        AttributeObjective().loss(nn.Linear(3, 3), x, y)


def _check_loss(net, x, y):
    logits, masks = net.forward_masks(x)
    bce = sum(F.binary_cross_entropy_with_logits(logits[:, k], y[:, k].float()) for k in range(3))
    l1_sum = masks.sum() / 4  # per image: sum over attributes, channels, pixels
    loss, stats = AttributeObjective(lam=1e-3).loss(net, x, y)
    torch.testing.assert_close(loss, bce + 1e-3 * l1_sum)
    loss_mean, _ = AttributeObjective(lam=1e-3, reduction="mean").loss(net, x, y)
    torch.testing.assert_close(loss_mean, bce + 1e-3 * masks.mean())
    assert stats["correct"] == pytest.approx(
        float(((logits > 0) == y.bool()).float().mean(1).sum())
    )
    assert float(mask_l1(masks, "sum")) == pytest.approx(float(l1_sum))


def test_mask_transformation_identity_symmetry_and_errors():
    m = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(mask_transform(m, 1, 0), m)
    for n in (0.5, 1.0, 2.5):  # Eq. 12 branch by branch
        eq12 = torch.where(m < 0.5, (m / 0.5) ** n / 2, 1 - ((1 - m) / 0.5) ** n / 2)
        torch.testing.assert_close(tone_curve(m, n), eq12)
        for beta in (0.0, 0.3):  # Eq. 11 on top of Eq. 12
            torch.testing.assert_close(mask_transform(m, n, beta), (1 + beta) * eq12 - beta)
    before = m.clone()
    mask_transform(m, 2.0, 0.2)
    assert torch.equal(m, before)  # the masks are not changed in place
    for n in (0.5, 2.0, 3.0):
        h = tone_curve(m, n)
        torch.testing.assert_close(tone_curve(1 - m, n), 1 - h)  # symmetric about 0.5
        assert float(tone_curve(torch.tensor(0.5), n)) == pytest.approx(0.5)
    # n = 2 pushes values away from 0.5; beta lowers the curve: g(0) = -beta, g(1) = 1
    assert float(tone_curve(torch.tensor(0.25), 2.0)) == pytest.approx(0.125)
    assert float(tone_curve(torch.tensor(0.75), 2.0)) == pytest.approx(0.875)
    g = mask_transform(m, 2.0, 0.5)
    assert float(g[0]) == pytest.approx(-0.5) and float(g[-1]) == pytest.approx(1.0)
    for n, beta, what in ((0, 0.1, "n > 0"), (-1, 0, "n > 0"), (2, 1.0, "beta"), (2, -0.1, "beta")):
        with pytest.raises(InputError, match=what):
            mask_transform(m, n, beta)
    net = small_net()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net.transformed(1, 0)(x), net(x))
        assert not torch.allclose(net.transformed(3, 0.3)(x), net(x))
    assert net.transform == (1.0, 0.0)  # the original is unchanged


def test_pruned_network_is_smaller_and_equals_zeroed_channels():
    net = small_net(k=3, channels=(4, 6, 6, 10)).eval()
    x = torch.randn(3, 3, 16, 16)
    drop = [7, 2, 5]
    small = prune_channels(net, drop)
    assert small.feature_channels == 7 and small.masks.in_channels == 7
    assert small.masks.out_channels == 21 and small.heads.weight.shape == (3, 7)
    assert small.kept_channels == [0, 1, 3, 4, 6, 8, 9]
    # zero the channels after the extractor's last activation in the original network
    keep = torch.ones(10)
    keep[drop] = 0
    with torch.no_grad():
        f = net.features(x) * keep.view(1, -1, 1, 1)
        expected = net.classify(f)[0]
        torch.testing.assert_close(small(x), expected, rtol=1e-5, atol=1e-5)
    full, reduced = (cnnlens.macs(m, (3, 16, 16)).total for m in (net, small))
    c3, k, hw = 6, 3, 16 * 16
    conv_saved = 3 * 9 * c3 * hw  # three filters of the last extractor conv
    mask_saved = (10 * 10 - 7 * 7) * 9 * k * hw  # the K mask convs, inputs and outputs
    assert full - reduced == conv_saved + mask_saved  # (the K heads are not nn.Linear: uncounted)
    # pruning twice composes; channel ids refer to the original
    smaller = prune_channels(small, [0])
    assert smaller.kept_channels == [1, 3, 4, 6, 8, 9]
    with pytest.raises(InputError, match="lie in"):
        prune_channels(net, [10])
    with pytest.raises(InputError, match="at least one"):
        prune_channels(net, range(10))

    class Masked(nn.Module):  # a user's model with masks but not the cnnlens layers
        def forward_masks(self, x):
            return x, x

    with pytest.raises(InputError, match="AttributeNetwork"):
        prune_channels(Masked(), [0])


def test_semantic_order_visits_pairs_by_correlation_and_prefers_lower_l1():
    corr = torch.eye(4, dtype=torch.float64)
    corr[0, 1] = corr[1, 0] = 0.9
    corr[2, 3] = corr[3, 2] = -0.8
    corr[1, 2] = corr[2, 1] = 0.5
    l1 = torch.tensor([3.0, 1.0, 2.0, 4.0], dtype=torch.float64)
    # (0,1): prune 1 (lower L1); (2,3) |rho|=0.8: prune 2; then (0,3) zero-corr pairs in index
    # order: (0,3) prunes 0 (L1 3 < 4)
    assert semantic_order(corr, l1, "lower") == [1, 2, 0]
    assert semantic_order(corr, l1, "higher") == [0, 3, 2]  # (1,2) still both alive
    assert sorted(random_order(6, 0)) == list(range(6))
    assert random_order(6, 0) == random_order(6, 0) != random_order(6, 1)
    net = small_net()
    l1_net = net.extractor.last_conv.weight.abs().flatten(1).sum(1)
    assert l1_order(net) == torch.argsort(l1_net).tolist()
    with pytest.raises(InputError, match="prefer"):
        semantic_order(corr, l1, "middle")


def test_save_and_load_a_pruned_network(tmp_path, shapes_small):
    net = build_network(shapes_small, channels=SMALL)
    with_bn_statistics(net)
    small = prune_channels(net, [1, 3])
    save_attribute_network(small, tmp_path / "m", shapes_small)
    back = load_attribute_network(tmp_path / "m")
    x, _ = shapes_small.tensors(range(4))
    with torch.no_grad():
        torch.testing.assert_close(back(x), small.eval()(x))
    assert back.attribute_names == shapes_small.attribute_names
    assert back.channels == [4, 6, 6, 6]


def test_data_without_attributes_is_refused():
    with pytest.raises(DataError, match="no attributes"):
        attribute_dataset(cnnlens.data.load("digits", split="test"))
    x = torch.randn(5, 3, 16, 16)
    data = attribute_dataset((x, torch.tensor([[1, 0]] * 5)), names=["a", "b"])
    assert data.attribute_names == ["a", "b"] and data.attributes.shape == (5, 2)
    with pytest.raises(DataError, match="0/1"):
        attribute_dataset((x, torch.full((5, 2), 2)))


@pytest.fixture(scope="module")
def shapes_small():
    return cnnlens.data.load("shapes", split="test", size=16, n=64)


def test_trains_through_fit_on_a_users_own_tensors():
    from cnnlens.studies.channel_roles.training import default_config, train_attribute_network

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 12, 12, generator=gen)
    attrs = torch.stack([x[:, 0].mean((1, 2)) > 0, x[:, 1].mean((1, 2)) > 0], 1)
    net, result = train_attribute_network(
        (x, attrs), config=default_config(epochs=2), channels=SMALL, lam=1e-4
    )
    assert not net.training and [r["epoch"] for r in result.history] == [1, 2]
    assert net.num_attributes == 2 and net.attribute_names == ["0", "1"]
    assert net.arch["name"] == "attribute-net" and net.arch["kwargs"]["channels"] == list(SMALL)
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in result.history)

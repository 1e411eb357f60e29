"""The information-plane callback and its two estimators (binning; KDE upper bound)."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlens.errors import ConfigError, InputError
from cnnlens.studies.drib.information_plane import (
    InformationPlane,
    PlanePoint,
    binned_information,
    kde_information,
    key_points,
)


def _labels_entropy(y: torch.Tensor) -> float:
    p = torch.bincount(y).double() / len(y)
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


def _sample(n=400, d=3, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    z = torch.randn(n, d, generator=g) + y[:, None].float()  # features that know the label
    return z, y


def test_binning_bounds_and_its_definition():
    z, y = _sample()
    ixt, ity = binned_information(z, y, bins=30)
    assert 0 < ixt <= math.log2(len(z)) + 1e-9
    assert 0 < ity <= _labels_entropy(y) + 1e-9
    assert ity <= ixt + 1e-9
    # one unit that is the label itself: T determines Y, so I(T;Y) = H(Y) = H(T)
    ixt, ity = binned_information(y[:, None].float(), y, bins=30)
    assert ity == pytest.approx(_labels_entropy(y), abs=1e-9)
    assert ixt == pytest.approx(ity, abs=1e-9)
    # distinct rows of many units: every sample has its own bin tuple, H(T) = log2 N
    wide = torch.randn(200, 64, generator=torch.Generator().manual_seed(1))
    assert binned_information(wide, torch.zeros(200, dtype=torch.long))[0] == pytest.approx(
        math.log2(200), abs=1e-9
    )


def test_kde_bound_limits_and_monotone_in_noise():
    z, y = _sample()
    values = [kde_information(z, y, noise_variance=v) for v in (0.01, 0.1, 1.0, 10.0, 100.0)]
    ixts = [v[0] for v in values]
    assert all(a > b for a, b in zip(ixts, ixts[1:], strict=False))
    for ixt, ity in values:
        assert 0 <= ixt <= math.log2(len(z)) + 1e-9
        assert -1e-9 <= ity <= _labels_entropy(y) + 1e-9
    # tiny noise: every point its own component, so the bound is log2 N
    far = torch.arange(50.0)[:, None] * 10
    assert kde_information(far, torch.zeros(50, dtype=torch.long), noise_variance=1e-3)[
        0
    ] == pytest.approx(math.log2(50), abs=1e-6)


@pytest.mark.parametrize("estimator", [binned_information, kde_information])
def test_identical_features_carry_no_information(estimator):
    _z, y = _sample()
    ixt, ity = estimator(torch.full((len(y), 5), 0.7), y)
    assert abs(ixt) < 1e-9 and abs(ity) < 1e-9


@pytest.mark.parametrize("estimator", [binned_information, kde_information])
def test_relabelling_and_reordering_change_nothing(estimator):
    z, y = _sample(seed=2)
    base = estimator(z, y)
    relabelled = torch.tensor([3, 0, 2, 1])[y]  # an invertible renaming of the classes
    units = z[:, torch.tensor([2, 0, 1])]  # the same units in another order
    rows = torch.randperm(len(z), generator=torch.Generator().manual_seed(5))
    for got in (estimator(z, relabelled), estimator(units, y), estimator(z[rows], y[rows])):
        assert got == pytest.approx(base, abs=1e-9)


def test_bad_input_is_named():
    z, y = _sample()
    with pytest.raises(InputError, match="labels"):
        binned_information(z, y[:-1])
    with pytest.raises(InputError, match=r"\[N, D\]"):
        kde_information(z[0], y)
    with pytest.raises(ConfigError, match="bins"):
        binned_information(z, y, bins=1)
    with pytest.raises(ConfigError, match="noise_variance"):
        kde_information(z, y, noise_variance=0)


def _point(epoch, ixz, izy, acc):
    return PlanePoint(epoch, "layer", "kde", ixz, izy, acc)


def test_transition_is_the_peak_and_convergence_where_it_settles():
    ixz = [5.0, 7.0, 9.0, 8.0, 6.0, 5.1, 5.05, 5.0]
    izy = [1.0, 1.5, 2.0, 2.5, 2.8, 2.9, 2.95, 2.96]
    points = [_point(e + 1, a, b, e / 10) for e, (a, b) in enumerate(zip(ixz, izy, strict=True))]
    found = key_points(points[::-1])  # order does not matter
    assert found["transition"].epoch == 3
    # within 5 % of the range (0.2 bit for I(X;Z), 0.098 for I(Z;Y)) of the last value from epoch 6
    assert found["convergence"].epoch == 6
    assert found["convergence"].accuracy == pytest.approx(0.5)
    with pytest.raises(InputError):
        key_points([])


def test_callback_through_fit_records_each_epoch_and_leaves_the_model_alone():
    from cnnlens import nets
    from cnnlens.data import load
    from cnnlens.hooks import model_fingerprint, same_fingerprint
    from cnnlens.train import OptimizerConfig, TrainConfig, fit

    train = load("digits", split="train")
    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=10, in_channels=1)
    plane = InformationPlane(train, layers=["layer1", "layer3"], n=200, noise_variance=0.5)
    config = TrainConfig(
        epochs=2, batch_size=64, optimizer=OptimizerConfig(lr=0.05), augment=(), seed=0
    )
    result = fit(model, train.subset(range(256)), config=config, callbacks=[plane])
    assert len(plane.points_) == 2 * 2 * 2  # epochs x layers x estimators
    record = result.history[-1]
    for est in ("binning", "kde"):
        for layer in ("layer1", "layer3"):
            trajectory = plane.trajectory(layer, est)
            assert [p.epoch for p in trajectory] == [1, 2]
            assert record[f"ip_{est}_{layer}_ixz"] == trajectory[-1].ixz
            assert all(0 <= p.ixz <= math.log2(200) + 1e-9 for p in trajectory)
    assert 0 <= record["ip_accuracy"] <= 1
    # the measurement itself changes nothing a caller can see
    model.train()
    before = model_fingerprint(model)
    plane.measure(model, epoch=3)
    assert same_fingerprint(before, model_fingerprint(model))
    # the features are the layer's global average: compare with a direct forward
    feats, logits = plane.features(model)
    with torch.no_grad():
        model.eval()
        x = plane.x
        direct = model.layer1(model.relu(model.bn1(model.conv1(x)))).mean((2, 3))
        assert torch.allclose(feats["layer1"], direct, atol=1e-5)
        assert torch.allclose(logits, model(x), atol=1e-5)
    assert "30 bins" in plane.describe("binning") and "0.5" in plane.describe("kde")


def test_default_layer_is_the_last_spatial_map():
    from cnnlens import nets
    from cnnlens.data import load

    plane = InformationPlane(load("digits", split="test"), n=50)
    model = nets.create("resnet8", num_classes=10, in_channels=1)
    feats, _ = plane.features(model)
    assert list(feats) == ["layer3"] and feats["layer3"].shape == (50, 64)

"""The depth study through the ImageNet-shaped families (paper 002, section 5.2.2).

Untrained networks at 32 px on a few ``shapes`` images: the depth points exist and run
in order, the pooled features are the stage outputs, r_A lies in [0, 1] for the trained
head's kind of decomposition and equals a slow reference (Algorithm 1 and the decomposed
head written as loops), and the model is left as found.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlens import nets
from cnnlens.data import load as load_data
from cnnlens.errors import InputError
from cnnlens.hooks import model_fingerprint, same_fingerprint
from cnnlens.studies.decompose.stages import (
    DEPTH_POINTS,
    HEAD_INPUT,
    decomposed_scores,
    depth_points,
    fit_probe,
    layer_depths,
    pooled_features,
    stage_depth,
)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def data():
    return load_data("shapes", split="train", n=16), load_data("shapes", split="test", n=16)


def _model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return nets.create(arch, num_classes=8).eval()


def test_every_imagenet_family_has_depth_points():
    from cnnlens.nets.imagenet import FAMILIES

    assert set(DEPTH_POINTS) == set(FAMILIES)
    assert depth_points("densenet121")[-1] == HEAD_INPUT
    with pytest.raises(InputError, match="no depth points for 'resnet20'"):
        depth_points("resnet20")


@pytest.mark.parametrize("arch", sorted(DEPTH_POINTS))
def test_depth_points_run_in_order(arch, data):
    """Each point's module exists, runs, and runs after the previous one; the head input last."""
    model = _model(arch)
    layers = depth_points(arch)
    probe = data[0].tensors(torch.arange(2))[0]
    depths = layer_depths(model, layers, probe)
    assert all(a < b for a, b in zip(depths, depths[1:], strict=False)), depths
    convs = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert depths[-1] == convs - 1  # everything but the head runs before its input
    feats, logits, _ = pooled_features(model, data[0], layers, batch_size=16)
    assert feats[HEAD_INPUT].shape == (16, model.head.in_features)
    with torch.no_grad():
        assert torch.allclose(logits, model(data[0].tensors(torch.arange(16))[0]), atol=1e-5)


@pytest.mark.parametrize("arch", ["densenet121", "efficientnet_b0"])
def test_study_runs_on_the_papers_families(arch, data):
    model = _model(arch)
    before = model_fingerprint(model)
    rows = stage_depth(model, *data, layers=depth_points(arch), batch_size=8)
    assert same_fingerprint(before, model_fingerprint(model))
    assert [r["index"] for r in rows] == list(range(1, len(depth_points(arch)) + 1))
    assert [r["depth"] for r in rows] == sorted({r["depth"] for r in rows})
    for r in rows:
        assert r["k1"] == r["k2"] == max(1, round(5 / 64 * r["m"]))
        assert 0 <= r["A_d"] <= 1 and 0 <= r["A_f"] <= 1
    assert "r_A_head" in rows[-1] and "r_A_head" not in rows[0]


def test_several_ratios_share_the_probe(data):
    """Two ratios give the rows of two single-ratio calls, interleaved point by point."""
    model = _model("resnet18")
    layers = ("layer2", HEAD_INPUT)
    both = stage_depth(model, *data, layers=layers, ratio=[0.05, 0.5], batch_size=16)
    single = [stage_depth(model, *data, layers=layers, ratio=r, batch_size=16) for r in (0.05, 0.5)]
    assert both == [row for pair in zip(*single, strict=True) for row in pair]
    assert [r["k1"] for r in both] == [6, 64, 26, 256]


def test_resnet_pooled_features_are_the_stage_outputs(data):
    """Written out by hand: stem, then each stage, averaged over space."""
    model = _model("resnet18")
    x = data[0].tensors(torch.arange(16))[0]
    feats, _, _ = pooled_features(model, data[0], depth_points("resnet18"), batch_size=16)
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            h = getattr(model, name)(h)
            key = HEAD_INPUT if name == "layer4" else name
            assert torch.allclose(feats[key], h.mean(dim=(2, 3)), atol=1e-5), name
    assert feats["layer1"].shape[1] == 64 and feats["layer3"].shape[1] == 256


def _slow_r_a(head: nn.Linear, train, y_train, test, y_test, k: int, n_classes: int) -> float:
    """Algorithm 1 with k1 = k2 = k and the decomposed head, one image and class at a time."""
    counts = [[0] * train.shape[1] for _ in range(n_classes)]
    for row, y in zip(train.tolist(), y_train.tolist(), strict=True):
        order = sorted(range(len(row)), key=lambda j: (-abs(row[j]), j))
        for j in order[:k]:
            counts[y][j] += 1
    chosen = [
        sorted(range(len(c)), key=lambda j: (-c[j], j))[:k] for c in counts
    ]  # most frequent, lower index first
    w, b = head.weight.tolist(), head.bias.tolist()
    full = decomposed = 0
    for row, y in zip(test.tolist(), y_test.tolist(), strict=True):
        f = [sum(w[c][j] * row[j] for j in range(len(row))) + b[c] for c in range(n_classes)]
        d = [sum(w[c][j] * row[j] for j in chosen[c]) + b[c] for c in range(n_classes)]
        full += max(range(n_classes), key=lambda c: f[c]) == y
        decomposed += max(range(n_classes), key=lambda c: d[c]) == y
    return decomposed / full


def test_r_a_equals_slow_reference_on_a_tiny_net(data):
    model = _model("resnet18")
    layers = depth_points("resnet18")
    rows = stage_depth(model, *data, layers=layers, ratio=0.05, batch_size=16)
    train_feats, _, _ = pooled_features(model, data[0], layers, batch_size=16)
    test_feats, _, _ = pooled_features(model, data[1], layers, batch_size=16)
    y_train, y_test = data[0].labels, data[1].labels
    for row in rows:
        name, k = row["layer"], row["k1"]
        probe = fit_probe(train_feats[name], y_train, 8)
        expected = _slow_r_a(probe, train_feats[name], y_train, test_feats[name], y_test, k, 8)
        assert row["r_A"] == pytest.approx(expected, abs=1e-12), name
        # r_A = A_d / A_f >= 0; it exceeds 1 only where the decomposed head is more accurate
        assert row["r_A"] == pytest.approx(row["A_d"] / row["A_f"]) and row["r_A"] >= 0
    own = _slow_r_a(model.head, train_feats[HEAD_INPUT], y_train, test_feats[HEAD_INPUT], y_test,
                    rows[-1]["k1"], 8)  # fmt: skip
    if rows[-1]["A_f_head"] > 0:
        assert rows[-1]["r_A_head"] == pytest.approx(own, abs=1e-12)


def test_decomposing_with_every_feature_keeps_the_accuracy():
    """k = m: every class reads every feature, so A_d = A_f and r_A = 1."""
    g = torch.Generator().manual_seed(0)
    train, test = torch.rand(40, 6, generator=g), torch.rand(30, 6, generator=g)
    y_train, y_test = torch.arange(40) % 4, torch.arange(30) % 4
    probe = fit_probe(train, y_train, 4)
    scores = decomposed_scores(probe, train, y_train, test, y_test, k=6, n_classes=4)
    assert scores["A_d"] == scores["A_f"] and scores["r_A"] == 1.0


def test_bad_settings_are_refused(data):
    model = _model("resnet18")
    with pytest.raises(InputError, match="ratio must lie in"):
        stage_depth(model, *data, layers=depth_points("resnet18"), ratio=0)
    with pytest.raises(InputError, match="got 2"):
        stage_depth(model, *data, layers=depth_points("resnet18"), ratio=[0.5, 2])
    with pytest.raises(InputError, match="layers must name"):
        stage_depth(model, *data, layers=())


def test_depth_figure_follows_the_figure_rule():
    from cnnlens.plotting import render
    from cnnlens.studies.decompose.plots import family_depth_plot

    rows = [
        {"family": f, "index": i, "depth": 10 * i, "r_A": 0.8 + 0.01 * i}
        for f in ("densenet121", "efficientnet_b0")
        for i in (1, 2, 3)
    ]
    rows[2]["r_A_head"] = rows[5]["r_A_head"] = 0.9
    rendered = render(family_depth_plot(rows))
    assert rendered.problems() == []


def test_package_exports_the_stage_study():
    import cnnlens.studies.decompose as decompose

    assert decompose.stage_depth is stage_depth and decompose.depth_points is depth_points

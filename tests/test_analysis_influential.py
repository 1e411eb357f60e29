"""InfluentialFeatures (paper 002, Algorithm 1) against a plain-Python reference."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from cnnlens.data.base import TensorDataset
from cnnlens.errors import CnnlensError, DataError, InputError, LayerError
from cnnlens.hooks import model_fingerprint, same_fingerprint
from cnnlens.studies.decompose import InfluentialFeatures


def reference(features: torch.Tensor, groups: torch.Tensor, k1: int, k2: int, n_classes: int):
    """Algorithm 1 written out with Python loops: ties go to the lower index; past the
    counted features (k2 > k1), never-counted ones by the class's l1 mass."""
    m = features.shape[1]
    indices, hists = [], []
    for c in range(n_classes):
        counter: Counter = Counter()
        for row, g in zip(features.tolist(), groups.tolist(), strict=True):
            if g != c:
                continue
            order = sorted(range(m), key=lambda j: (-abs(row[j]), j))
            counter.update(order[:k1])
        hist = [counter.get(j, 0) for j in range(m)]
        hists.append(hist)
        mass = [
            sum(abs(r[j]) for r, g in zip(features.tolist(), groups.tolist()) if g == c)
            for j in range(m)
        ]
        indices.append(
            sorted(range(m), key=lambda j: (-hist[j], 0 if hist[j] else -mass[j], j))[:k2]
        )
    return torch.tensor(indices), torch.tensor(hists)


@pytest.mark.parametrize("k1,k2", [(1, 1), (3, 2), (5, 5), (6, 3), (1, 4), (2, 8)])
def test_matches_reference_with_ties(k1, k2):
    gen = torch.Generator().manual_seed(k1 * 10 + k2)
    # small integers: many ties, both within an image and between histogram counts
    features = torch.randint(0, 4, (60, 12), generator=gen).float()
    groups = torch.arange(60) % 3
    est = InfluentialFeatures(k1=k1, k2=k2).fit_features(features, groups, n_classes=3)
    ref_idx, ref_hist = reference(features, groups, k1, k2, 3)
    assert torch.equal(est.indices_, ref_idx)
    assert torch.equal(est.histograms_, ref_hist)
    assert est.histograms_.sum(1).tolist() == [20 * k1] * 3
    assert est.counts_.tolist() == [20, 20, 20]


def test_planted_features_and_coverage():
    # class 0 lives on features 2 and 7, class 1 on features 0 and 4
    gen = torch.Generator().manual_seed(0)
    features = torch.rand(40, 10, generator=gen) * 0.1
    groups = torch.arange(40) % 2
    features[groups == 0, 2] += 5
    features[groups == 0, 7] += 3
    features[groups == 1, 0] += 4
    features[groups == 1, 4] += 6
    est = InfluentialFeatures(k1=2, k2=2).fit_features(features, groups, n_classes=2)
    assert est.indices_.tolist() == [[2, 7], [0, 4]]
    mass0 = features[groups == 0].sum(0)
    assert est.coverage_[0] == pytest.approx(float((mass0[2] + mass0[7]) / mass0.sum()), rel=1e-5)
    assert est.mask_.sum(1).tolist() == [2, 2]


def test_bad_input_is_a_clear_error():
    x = torch.rand(10, 8)
    g = torch.arange(10) % 2
    with pytest.raises(InputError, match="k2 must be <= the feature width m=8"):
        InfluentialFeatures(k1=2, k2=9).fit_features(x, g, n_classes=2)
    with pytest.raises(InputError, match="k1 must be <= the feature width m=8"):
        InfluentialFeatures(k1=9, k2=1).fit_features(x, g, n_classes=2)
    with pytest.raises(InputError, match="k1 must be an integer >= 1 or 'coverage'"):
        InfluentialFeatures(k1=0, k2=0).fit_features(x, g, n_classes=2)
    with pytest.raises(InputError, match="k1 must be"):
        InfluentialFeatures(k1="most", k2=1).fit_features(x, g, n_classes=2)
    for bad in (0, 1.5, float("nan")):
        with pytest.raises(InputError, match="coverage must be a number > 0 and <= 1"):
            InfluentialFeatures(k1="coverage", coverage=bad).fit_features(x, g, n_classes=2)
    with pytest.raises(InputError, match="by must be"):
        InfluentialFeatures(by="guess").fit_features(x, g, n_classes=2)
    with pytest.raises(DataError, match=r"class\(es\) \[2\] have no images"):
        InfluentialFeatures(k1=2, k2=2).fit_features(x, g, n_classes=3)
    with pytest.raises(InputError, match="not fitted"):
        _ = InfluentialFeatures().mask_


def test_fit_on_trained_model_leaves_it_untouched(trained_shapes):
    model, train = trained_shapes.model, trained_shapes.train.subset(range(1500))
    before = model_fingerprint(model)
    est = InfluentialFeatures(k1=5, k2=5)
    assert est.fit(model, train, batch_size=200) is est
    assert same_fingerprint(before, model_fingerprint(model))
    assert est.indices_.shape == (8, 5) and est.histograms_.shape == (8, 64)
    assert est.head_name_ == "head" and est.n_features_in_ == 64
    assert ((est.coverage_ > 0) & (est.coverage_ <= 1)).all()
    # the features are post-ReLU: a class's top-5 holds far more than 5/64 of its mass
    # (0.194-0.205 against 5/64 = 0.078 over training seeds 0, ATEN_CPU_CAPABILITY default
    # and avx2, and 1, avx2)
    assert float(est.coverage_.mean()) > 5 / 64
    again = InfluentialFeatures(k1=5, k2=5).fit(model, train, batch_size=64)
    assert torch.equal(again.indices_, est.indices_)
    pred = InfluentialFeatures(k1=5, k2=5, by="predicted").fit(model, train)
    assert pred.counts_.sum() == len(train)
    facts = est.to_dict()
    assert facts["classes"][train.classes[0]]["indices"] == est.indices_[0].tolist()


class UserNet(nn.Module):
    """A user's classifier: other names, the final layer called ``classifier``."""

    def __init__(self, tail: str = "linear") -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.tail = tail
        self.classifier = nn.Linear(6, 2) if tail != "conv" else nn.Conv2d(6, 2, 1)

    def forward(self, x):
        z = self.body(x)
        if self.tail == "conv":
            return self.classifier(z).flatten(1)
        out = self.classifier(z.flatten(1))
        return out * 2 if self.tail == "scaled" else out


def _tiny_data(n: int = 12) -> TensorDataset:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(n, 3, 8, 8, generator=gen)
    return TensorDataset(images, torch.arange(n) % 2, classes=["a", "b"], name="tiny")


def test_works_on_a_user_model_and_rejects_bad_heads():
    torch.manual_seed(0)
    data = _tiny_data()
    est = InfluentialFeatures(k1=3, k2=2).fit(UserNet(), data)
    assert est.head_name_ == "classifier" and est.indices_.shape == (2, 2)
    with pytest.raises(LayerError, match="no nn.Linear"):
        InfluentialFeatures(k1=3, k2=2).fit(UserNet("conv"), data)
    with pytest.raises(LayerError, match="does not produce the logits"):
        InfluentialFeatures(k1=3, k2=2).fit(UserNet("scaled"), data)
    three = TensorDataset(
        torch.rand(6, 3, 8, 8), torch.arange(6) % 3, classes=["a", "b", "c"], name="three"
    )
    with pytest.raises(CnnlensError, match="predicts 2 classes"):
        InfluentialFeatures(k1=3, k2=2).fit(UserNet(), three)
    gray = TensorDataset(torch.rand(4, 1, 8, 8), torch.arange(4) % 2, classes=["a", "b"])
    with pytest.raises(InputError, match="cannot run on images"):
        InfluentialFeatures(k1=3, k2=2).fit(UserNet(), gray)
    one_class = TensorDataset(torch.rand(4, 3, 8, 8), torch.zeros(4), classes=["a", "b"])
    with pytest.raises(DataError, match=r"\['b'\] have no images"):
        InfluentialFeatures(k1=3, k2=2).fit(UserNet(), one_class)


# --- k1 by coverage (paper 002, section 4.4) -----------------------------------------
SHARES = torch.tensor([8.0, 4.0, 2.0, 1.0, 1.0])  # /16: cumulative 0.5, 0.75, 0.875, 0.9375, 1


def _constructed(n: int, m: int = 12, seed: int = 0) -> torch.Tensor:
    """Rows whose non-zero entries are SHARES at random places, at a random scale: the top
    k entries hold the same share of every row's l1 mass."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.zeros(n, m)
    for i in range(n):
        place = torch.randperm(m, generator=gen)[: len(SHARES)]
        rows[i, place] = SHARES * (0.5 + torch.rand(1, generator=gen))
    return rows


@pytest.mark.parametrize(
    "coverage,k1", [(0.5, 1), (0.6, 2), (0.75, 2), (0.875, 3), (0.9, 4), (0.95, 5), (1.0, 5)]
)
def test_coverage_k1_is_the_smallest_k_reaching_the_share(coverage, k1):
    feats = _constructed(30)
    groups = torch.arange(30) % 3
    est = InfluentialFeatures(k1="coverage", k2=2, coverage=coverage)
    est.fit_features(feats, groups, n_classes=3)
    assert est.k1_ == k1
    fixed = InfluentialFeatures(k1=k1, k2=2).fit_features(feats, groups, n_classes=3)
    assert torch.equal(est.indices_, fixed.indices_)
    assert torch.equal(est.histograms_, fixed.histograms_)
    facts = est.to_dict()
    assert facts["k1"] == k1 and facts["k1_mode"] == "coverage"
    assert facts["coverage_target"] == coverage


def test_coverage_averages_over_images():
    """Half the images need 1 feature (all mass in one), half need 4 of SHARES: the mean
    top-k share is 0.5 * 1 + 0.5 * SHARES' cumulative share."""
    feats = _constructed(20, seed=3)
    feats[::2] = 0
    feats[::2, 5] = 2.0
    groups = torch.arange(20) % 2
    for coverage, k1 in ((0.75, 1), (0.76, 2), (0.875, 2), (0.9, 3), (0.96, 4), (0.97, 5)):
        est = InfluentialFeatures(k1="coverage", coverage=coverage, k2=1)
        assert est.fit_features(feats, groups, n_classes=2).k1_ == k1, coverage


def test_coverage_k1_on_a_constructed_final_layer():
    """A model whose final layer reads the input itself: fit() finds the same k1."""
    m = 12
    feats = _constructed(24, m=m, seed=5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(m, 3))
    images = feats[:, :, None, None] / 16  # in [0, 1]; no normalisation: features = images
    data = TensorDataset(
        images, torch.arange(24) % 3, classes=["a", "b", "c"], mean=[0.0] * m, std=[1.0] * m
    )
    est = InfluentialFeatures(k1="coverage", coverage=0.9, k2=6).fit(model, data)
    assert est.k1_ == 4 and est.n_features_in_ == m
    assert est.indices_.shape == (3, 6)


def test_k2_above_k1_fills_with_the_class_mass():
    """k2 > k1: the counted features first, then never-counted ones by class mass."""
    features = torch.zeros(8, 6)
    groups = torch.zeros(8, dtype=torch.long)
    features[:, 3] = 5.0  # every image's top-1
    features[:, 1] = 1.0
    features[:4, 4] = 2.0  # more mass than feature 1 over the class (8 vs 8): tie -> index
    features[:, 0] = 0.5
    est = InfluentialFeatures(k1=1, k2=4).fit_features(features, groups, n_classes=1)
    # mass: f3 40, f1 8, f4 8, f0 4 -> 3 counted, then 1 and 4 (tie, lower index), then 0
    assert est.indices_.tolist() == [[3, 1, 4, 0]]

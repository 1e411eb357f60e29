"""Meta-evaluation of metrics (issue 33, item 3; MetaQuantus, Hedström et al. 2023)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cnnlens
from cnnlens.hooks import model_fingerprint, same_fingerprint
from cnnlens.metrics import registry
from cnnlens.metrics.meta import meta_evaluate, wilcoxon_p

METHODS = ["saliency", "input-x-gradient", "random", "sobel"]


def tiny_model() -> nn.Module:
    """A conv layer and a linear head on the flattened map: its gradients differ pixel by
    pixel and follow what the logit depends on, so gradient maps are meaningful for it."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 3)
    ).eval()


@pytest.fixture(scope="module")
def batch():
    return torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def constant_metric() -> registry.Metric:
    return registry.Metric(
        "constant", "ignores the explanation", lambda job, **_: {"values": torch.zeros(len(job.x))}
    )


def coin_metric() -> registry.Metric:
    """A metric whose scores are noise (from its own seeded generator): it measures nothing."""
    gen = torch.Generator().manual_seed(5)
    return registry.Metric(
        "coin", "random numbers", lambda job, **_: {"values": torch.rand(len(job.x), generator=gen)}
    )


def test_wilcoxon_matches_scipy_with_zeros_and_ties():
    from scipy.stats import wilcoxon

    g = torch.Generator().manual_seed(0)
    rows, valid = [], []
    for n in (6, 11, 25):
        a = torch.randint(-3, 4, (n,), generator=g).double()  # zeros and ties
        rows.append(torch.cat([a, torch.zeros(25 - n)]))
        valid.append(torch.arange(25) < n)
    got = wilcoxon_p(torch.stack(rows), torch.stack(valid))
    for i, n in enumerate((6, 11, 25)):
        d = rows[i][:n].numpy()
        ref = wilcoxon(d, zero_method="zsplit", method="asymptotic").pvalue
        assert float(got[i]) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    none = wilcoxon_p(torch.zeros(2, 4), torch.tensor([[True] * 4, [False] * 4]))
    assert float(none[0]) == 1.0 and math.isnan(float(none[1]))


def test_a_metric_that_ignores_the_explanation_does_not_react(batch):
    result = meta_evaluate(tiny_model(), batch, constant_metric(), METHODS, perturbations=2,
                           resamples=50)  # fmt: skip
    for space in ("model", "input"):
        scores = result.scores[space]
        # no change is ever detected, and no broken explanation ever scores worse
        assert scores["IAC_AR"][0] == 0.0 and scores["IEC_AR"][0] == 0.0
        assert scores["MC"][2] <= 0.5  # half the criteria can never be met
    assert result.kept["model-adversary"] > 0 and result.kept["input-adversary"] > 0


def test_deletion_is_a_sounder_metric_than_random_numbers(batch):
    model = tiny_model()
    fp = model_fingerprint(model)
    sound = meta_evaluate(model, batch, "deletion", METHODS, metric_params={"step": 32},
                          perturbations=2, resamples=200)  # fmt: skip
    coin = meta_evaluate(model, batch, coin_metric(), METHODS, perturbations=2, resamples=200)
    constant = meta_evaluate(model, batch, constant_metric(), METHODS, perturbations=2,
                             resamples=50)  # fmt: skip
    for space in ("model", "input"):
        s, c = sound.scores[space], coin.scores[space]
        # the methods' ranking survives minor noise under deletion, not under random numbers
        assert s["IEC_NR"][1] > c["IEC_NR"][2]
        # deletion detects the disruption, a constant metric cannot
        assert s["IAC_AR"][1] > constant.scores[space]["IAC_AR"][2]
        # overall: deletion's meta-consistency interval lies above the random metric's mean
        assert s["MC"][1] > c["MC"][0]
    assert same_fingerprint(fp, model_fingerprint(model))  # perturbed copies only


def test_meta_evaluation_is_determined_by_its_seed(batch):
    model = tiny_model()
    run = dict(metric_params={"step": 64}, perturbations=1, resamples=50)
    a = meta_evaluate(model, batch, "deletion", ["saliency", "random"], seed=3, **run)
    b = meta_evaluate(model, batch, "deletion", ["saliency", "random"], seed=3, **run)
    c = meta_evaluate(model, batch, "deletion", ["saliency", "random"], seed=4, **run)
    assert a.to_dict() == b.to_dict()
    assert a.to_dict()["scores"] != c.to_dict()["scores"]
    assert "| deletion | model |" in a.markdown() and "<table>" in a.html()


def test_meta_evaluation_refuses_bad_input(batch):
    model = tiny_model()
    with pytest.raises(cnnlens.InputError, match="at least two"):
        meta_evaluate(model, batch, "deletion", ["saliency"])
    with pytest.raises(cnnlens.InputError, match="needs object boxes or masks"):
        meta_evaluate(model, batch, "pointing-game", ["saliency", "random"])
    with pytest.raises(cnnlens.InputError, match="unknown metric"):
        meta_evaluate(model, batch, "deletio", ["saliency", "random"])
    with pytest.raises(cnnlens.InputError, match="size > 0"):
        meta_evaluate(model, batch, "deletion", ["saliency", "random"],
                      tests={"t": ("weights", "minor", 0.1)})  # fmt: skip

"""Faithfulness group of issue 33: known answers on a linear model whose exact pixel
contributions are known, bad input, batch invariance, seeded determinism, the model
left as found, and the registry entries run through ``evaluate``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlens import metrics
from cnnlens.errors import CnnlensError
from cnnlens.hooks import model_fingerprint, same_fingerprint
from cnnlens.metrics.evaluate import evaluate
from cnnlens.metrics.faithfulness_correlation import faithfulness_correlation
from cnnlens.metrics.faithfulness_estimate import faithfulness_estimate
from cnnlens.metrics.irof import irof
from cnnlens.metrics.monotonicity import monotonicity_arya, monotonicity_nguyen
from cnnlens.metrics.selectivity import selectivity

GROUP = [
    "faithfulness-correlation", "faithfulness-estimate", "monotonicity-arya",
    "monotonicity-nguyen", "irof", "selectivity",
]  # fmt: skip


def _linear():
    """Logit 0 = sum_i w_i x_i (3 channels, 12 x 12): removing pixel set S to 0 lowers it
    by exactly sum_{i in S} c_i, c = (w * x) summed over channels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 2)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 12, 12, generator=g)
    contrib = (model[1].weight[0].view(3, 12, 12) * x).sum(1, keepdim=True).detach()
    return model, x, contrib


def _cnn():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 4),
    ).eval()  # fmt: skip
    g = torch.Generator().manual_seed(2)
    return model, torch.randn(4, 3, 16, 16, generator=g), torch.rand(4, 1, 16, 16, generator=g)


def test_exact_contributions_correlate_perfectly():
    model, x, c = _linear()
    kw = dict(baseline=0.0, score="logit")
    fc = faithfulness_correlation(model, x, c, 0, runs=30, subset=10, **kw)
    assert torch.allclose(fc.values, torch.ones(3), atol=1e-4)
    assert torch.allclose(fc.extras["sums"], fc.extras["drops"], atol=1e-3)
    fe = faithfulness_estimate(model, x, c, 0, step=3, **kw)
    assert torch.allclose(fe.values, torch.ones(3), atol=1e-4)
    # one pixel per group, fill 0: the change is c_i^2, the attribution |c_i|
    mn = monotonicity_nguyen(model, x, c, 0, step=1, samples=1, **kw)
    assert torch.allclose(mn.values, torch.ones(3), atol=1e-6)
    # a map unrelated to the model correlates far less
    noise = torch.rand(c.shape, generator=torch.Generator().manual_seed(9))
    worse = faithfulness_estimate(model, x, noise, 0, step=3, **kw)
    assert (worse.values < 0.5).all()


def test_monotonicity_arya_known_answers():
    model, x, c = _linear()
    # only positive contributions left: every step raises the logit, whatever the order
    xp = torch.where(c > 0, x, torch.zeros_like(x))
    cp = c.clamp_min(0)
    assert monotonicity_arya(model, xp, cp, 0, step=4, score="logit").values.tolist() == [1.0] * 3
    # mixed signs, signed order: negative contributions come first and lower the logit
    r = monotonicity_arya(model, x, c, 0, step=4, absolute=False, score="logit")
    assert r.values.tolist() == [0.0] * 3
    assert r.curves.shape == (3, 36)


def test_selectivity_and_irof_prefer_the_true_order():
    model, x, c = _linear()
    kw = dict(baseline=0.0, score="logit")
    good, bad = (
        selectivity(model, x, c, 0, patch=3, **kw),
        selectivity(model, x, -c, 0, patch=3, **kw),
    )
    assert (good.values < bad.values).all()
    assert torch.allclose(good.curves[:, -1], bad.curves[:, -1])  # both end on the empty image
    model2, x2, maps = _cnn()
    ig, rev = irof(model2, x2, maps), irof(model2, x2, -maps)
    assert ig.curves.shape[0] == 4 and torch.equal(ig.curves[:, 0], torch.ones(4))
    # reversing the order of a map mirrors its curve's drop: the two areas differ
    assert not torch.allclose(ig.values, rev.values)


def test_bad_input_is_refused():
    model, x, maps = _cnn()
    with pytest.raises(CnnlensError, match="step"):
        faithfulness_estimate(model, x, maps, step=0)
    with pytest.raises(CnnlensError, match="runs"):
        faithfulness_correlation(model, x, maps, runs=1)
    with pytest.raises(CnnlensError, match="baseline"):
        selectivity(model, x, maps, baseline="grey")
    with pytest.raises(CnnlensError, match="maps"):
        irof(model, x, maps[:, 0])
    with pytest.raises(CnnlensError, match="samples"):
        monotonicity_nguyen(model, x, maps, samples=0)
    with pytest.raises(CnnlensError, match="score"):
        monotonicity_arya(model, x, maps, score="loss")


CALLS = {
    "faithfulness-correlation": lambda m, x, a: faithfulness_correlation(m, x, a, runs=12),
    "faithfulness-estimate": lambda m, x, a: faithfulness_estimate(m, x, a, step=8),
    "monotonicity-arya": lambda m, x, a: monotonicity_arya(m, x, a, step=8),
    "monotonicity-nguyen": lambda m, x, a: monotonicity_nguyen(m, x, a, step=16, samples=3),
    "irof": lambda m, x, a: irof(m, x, a, segments=20),
    "selectivity": lambda m, x, a: selectivity(m, x, a, patch=4),
}


@pytest.mark.parametrize("name", GROUP)
def test_batch_invariance_determinism_and_model_untouched(name):
    model, x, maps = _cnn()
    before = model_fingerprint(model)
    whole = CALLS[name](model, x, maps)
    assert same_fingerprint(before, model_fingerprint(model))
    alone = CALLS[name](model, x[2:3], maps[2:3])
    again = CALLS[name](model, x, maps)
    assert torch.equal(whole.values.nan_to_num(), again.values.nan_to_num())  # same bits
    if whole.curves is not None:  # curves compare with a tolerance (other batch makeup)
        assert torch.allclose(whole.curves[2:3], alone.curves, atol=1e-5)
    if name == "monotonicity-arya":  # a 0/1 verdict on differences: compare the curves only
        return
    assert torch.allclose(whole.values[2:3], alone.values, atol=1e-4, equal_nan=True)


def test_seeds_change_the_random_draws_only():
    model, x, maps = _cnn()
    a = faithfulness_correlation(model, x, maps, runs=12, seed=1)
    b = faithfulness_correlation(model, x, maps, runs=12, seed=2)
    assert not torch.equal(a.extras["drops"], b.extras["drops"])
    n1 = monotonicity_nguyen(model, x, maps, step=16, samples=2, seed=1)
    n2 = monotonicity_nguyen(model, x, maps, step=16, samples=2, seed=1)
    assert torch.equal(n1.values.nan_to_num(), n2.values.nan_to_num())  # same seed, same bits


def test_registered_and_run_by_evaluate():
    model, x, _ = _cnn()
    for name in GROUP:
        entry = metrics.get(name)
        assert not entry.default and entry.needs == ("model",)
    assert metrics.get("selectivity").lower_is_better
    settings = {
        "faithfulness-correlation": {"runs": 8},
        "faithfulness-estimate": {"step": 16},
        "monotonicity-arya": {"step": 16},
        "monotonicity-nguyen": {"step": 32, "samples": 2},
        "irof": {"segments": 10},
        "selectivity": {"patch": 8},
    }
    ev = evaluate(model, x[:2], methods=["saliency"], metrics=GROUP, metric_params=settings,
                  sanity_images=0, progress=False)  # fmt: skip
    for method in ("saliency", "random", "sobel"):
        assert set(ev.values[method]) == set(GROUP)
        assert all(v.shape == (2,) for v in ev.values[method].values())

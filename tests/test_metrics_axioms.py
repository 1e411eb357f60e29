"""Sensitivity-n, sufficiency, random logit, non-sensitivity and input invariance (issue 33):
known answers on constructed models and maps, bad input, batch invariance, seeded
determinism, the model left as found, and the registry entries run through ``evaluate``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnlens
from cnnlens import metrics
from cnnlens.errors import CnnlensError
from cnnlens.hooks import model_fingerprint, same_fingerprint
from cnnlens.metrics.evaluate import evaluate
from cnnlens.metrics.input_invariance import input_invariance
from cnnlens.metrics.non_sensitivity import non_sensitivity
from cnnlens.metrics.random_logit import other_class, random_logit
from cnnlens.metrics.sensitivity_n import sensitivity_n
from cnnlens.metrics.sufficiency import sufficiency

GROUP = ["sensitivity-n", "sufficiency", "random-logit", "non-sensitivity", "input-invariance"]


def _linear():
    """Logit 0 = sum_i w_i x_i (3 channels, 12 x 12): removing pixel set S to 0 lowers it
    by exactly sum_{i in S} c_i, c = (w * x) summed over channels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 3)).eval()
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


def test_sensitivity_n_exact_contributions_and_noise():
    model, x, c = _linear()
    r = sensitivity_n(model, x, c, 0, runs=12, baseline=0.0, score="logit")
    assert torch.allclose(r.curves, torch.ones_like(r.curves), atol=1e-4)
    assert r.curves.shape == (3, 8) and float(r.x[-1]) <= 0.8
    noise = torch.rand(c.shape, generator=torch.Generator().manual_seed(9))
    worse = sensitivity_n(model, x, noise, 0, sizes=[1, 10], runs=12, baseline=0.0, score="logit")
    assert (worse.values < 0.6).all()


def test_sufficiency_known_answers():
    """Two clusters of near-identical maps; one cluster's images share a prediction, the
    other's do not: sufficiency 1 in the first, 0 in the second, NaN for a lone map."""
    model, x, _ = _linear()
    x = torch.cat([x, x[:2]])  # 5 images: predictions of 0, 1 repeat as 3, 4
    with torch.no_grad():
        pred = model(x).argmax(1)
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(2, 1, 1, 12, 12, generator=g)
    lone = 5 + torch.rand(1, 1, 12, 12, generator=g)
    maps = torch.cat([a, lone, b, a, b]) + 1e-3 * torch.rand(5, 1, 12, 12, generator=g)
    # cluster {0, 3} holds one image twice; cluster {2, 4} holds images 2 and 1
    r = sufficiency(model, x, maps, threshold=0.02)
    assert r.extras["neighbours"].tolist() == [1, 0, 1, 1, 1]
    assert r.values[0] == 1.0 and r.values[3] == 1.0 and torch.isnan(r.values[1])
    expected = float(pred[2] == pred[1])
    assert r.values[2] == expected and r.values[4] == expected
    # the order of the images does not matter
    perm = torch.tensor([4, 2, 0, 1, 3])
    again = sufficiency(model, x[perm], maps[perm], threshold=0.02)
    assert torch.equal(again.values.nan_to_num(-1), r.values[perm].nan_to_num(-1))


def test_random_logit_class_blind_and_class_specific():
    """A map that ignores the class (the image itself) scores similarity 1; the exact
    contributions of a linear model for two classes differ."""
    model, x, c = _linear()

    def blind(_m, inp, _t):
        return inp.abs().sum(1, keepdim=True)

    r = random_logit(model, x, blind(model, x, None), 0, method=blind)
    assert torch.allclose(r.values, torch.ones(3), atol=1e-6)
    assert (r.extras["other"] != 0).all()

    def exact(m, inp, t):
        w = m[1].weight[t].view(-1, 3, 12, 12)
        return (w * inp).sum(1, keepdim=True)

    r2 = random_logit(model, x, c, 0, method=exact, similarity="spearman")
    assert (r2.values.abs() < 0.5).all()
    e = cnnlens.explain(model, x, method="input-x-gradient", target=0)
    r3 = random_logit(model, x, e)  # the Explanation's method, re-run for the other class
    assert r3.values.shape == (3,) and (r3.values < 0.9).all()


def test_random_logit_spends_one_probe_image_when_the_target_is_given():
    """Images the model sees: the other class's explanation (N) plus one probe image
    for the class count, or N forwards when the target is to be predicted; a target
    out of range is still refused."""
    from cnnlens.errors import TargetError

    model, x, _c = _linear()
    seen = []
    handle = model.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))

    def blind(_m, inp, _t):
        return inp.abs().sum(1, keepdim=True)

    def by_hand(m, inp, t):  # every pass on the hooked model
        inp = inp.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(m(inp).gather(1, t[:, None]).sum(), inp)
        return g.abs().amax(1, keepdim=True)

    try:
        maps = blind(model, x, None)
        for target, probe in ((torch.zeros(3, dtype=torch.long), 1), (None, 3)):
            seen.clear()
            random_logit(model, x, maps, target, method=by_hand)
            assert sum(seen) == probe + 3, target
        with pytest.raises(TargetError):
            random_logit(model, x, maps, torch.tensor([0, 1, 99]), method=by_hand)
    finally:
        handle.remove()


def test_other_class_is_never_the_target_and_covers_the_others():
    t = torch.arange(5)
    for seed in range(20):
        o = other_class(seed, t, 5)
        assert (o != t).all() and ((o >= 0) & (o < 5)).all()
    seen = {int(other_class(s, torch.tensor([2]), 5)) for s in range(60)}
    assert seen == {0, 1, 3, 4}


def test_non_sensitivity_known_answers():
    """Linear model whose weights are zero on the left half: those pixels have no effect.
    A map zero exactly there scores 0; an all-positive map counts the left half."""
    model, x, _ = _linear()
    with torch.no_grad():
        model[1].weight.view(3, 3, 12, 12)[:, :, :, :6] = 0
    right = torch.zeros(3, 1, 12, 12)
    right[..., 6:] = 1.0
    r = non_sensitivity(model, x, right, 0, score="logit")
    assert r.values.tolist() == [0.0] * 3
    full = non_sensitivity(model, x, torch.ones(3, 1, 12, 12), 0, score="logit")
    assert full.values.tolist() == [72.0] * 3 and torch.allclose(
        full.extras["share"], 0.5 * torch.ones(3)
    )
    grouped = non_sensitivity(model, x, torch.ones(3, 1, 12, 12), 0, step=6, score="logit")
    assert grouped.values.tolist() == [12.0] * 3  # 24 runs of 6 pixels, 12 on the left


def test_input_invariance_known_answers_and_refusals():
    """Saliency is invariant to a shift the first layer absorbs, input x gradient is not
    (Kindermans et al.), with zero padding too; models whose first layer does not take the
    image as it is are refused."""
    model, x, _ = _cnn()
    before = model_fingerprint(model)
    sal = input_invariance(model, x, cnnlens.explain(model, x, method="saliency"))
    ixg = input_invariance(model, x, cnnlens.explain(model, x, method="input-x-gradient"))
    assert sal.values.tolist() == [1.0] * 4 and (sal.extras["difference"] < 1e-5).all()
    assert ixg.values.tolist() == [0.0] * 4 and (ixg.extras["difference"] > 0.1).all()
    assert same_fingerprint(before, model_fingerprint(model))
    lin, xl, _ = _linear()  # Linear after Flatten: the image reshaped, accepted

    def weights(m, _inp, t):  # the gradient of a linear model: blind to the input
        return m[1].weight[t].view(-1, 3, 12, 12).sum(1, keepdim=True).detach()

    r = input_invariance(
        lin, xl, weights(lin, xl, torch.zeros(3, dtype=torch.long)), 0, method=weights
    )
    assert r.values.tolist() == [1.0] * 3

    class Normalising(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = model

        def forward(self, inp):
            return self.body((inp - 0.5) / 0.2)

    with pytest.raises(CnnlensError, match="first layer"):
        input_invariance(Normalising(), x, cnnlens.explain(model, x, method="saliency"))

    class Matmul(nn.Module):  # no Conv2d or Linear at all
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3 * 16 * 16, 2))

        def forward(self, inp):
            return inp.flatten(1) @ self.w

    with pytest.raises(CnnlensError, match="Conv2d or Linear"):
        input_invariance(Matmul(), x, x[:, :1], method=lambda m, i, t: i[:, :1])


def test_bad_input_is_refused():
    model, x, maps = _cnn()
    with pytest.raises(CnnlensError, match="sizes"):
        sensitivity_n(model, x, maps, sizes=[0, 3])
    with pytest.raises(CnnlensError, match="sizes"):
        sensitivity_n(model, x, maps, sizes=[10_000])
    with pytest.raises(CnnlensError, match="threshold"):
        sufficiency(model, x, maps, threshold=2.0)
    with pytest.raises(CnnlensError, match="method"):
        random_logit(model, x, maps)
    with pytest.raises(CnnlensError, match="similarity"):
        random_logit(model, x, maps, method="saliency", similarity="l2")
    with pytest.raises(CnnlensError, match="eps"):
        non_sensitivity(model, x, maps, eps=-1.0)
    with pytest.raises(CnnlensError, match="maps"):
        non_sensitivity(model, x, maps[:, 0])
    with pytest.raises(CnnlensError, match="method"):
        input_invariance(model, x, maps)


CALLS = {
    "sensitivity-n": lambda m, x, a: sensitivity_n(m, x, a, sizes=[4, 32], runs=6),
    "random-logit": lambda m, x, a: random_logit(m, x, a, method="saliency"),
    "non-sensitivity": lambda m, x, a: non_sensitivity(m, x, a, step=8),
    "input-invariance": lambda m, x, a: input_invariance(m, x, a, method="saliency"),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_batch_invariance_determinism_and_model_untouched(name):
    """(Sufficiency compares an image with the others by definition: its order invariance
    is tested above.)"""
    model, x, maps = _cnn()
    before = model_fingerprint(model)
    whole = CALLS[name](model, x, maps)
    assert same_fingerprint(before, model_fingerprint(model))
    alone = CALLS[name](model, x[2:3], maps[2:3])
    again = CALLS[name](model, x, maps)
    assert torch.equal(whole.values.nan_to_num(), again.values.nan_to_num())  # same bits
    assert torch.allclose(whole.values[2:3], alone.values, atol=1e-4, equal_nan=True)


def test_seeds_change_the_random_draws_only():
    model, x, maps = _cnn()
    a = sensitivity_n(model, x, maps, sizes=[8], runs=6, seed=1)
    b = sensitivity_n(model, x, maps, sizes=[8], runs=6, seed=2)
    assert not torch.equal(a.extras["drops"], b.extras["drops"])
    others = {
        tuple(random_logit(model, x, maps, method="saliency", seed=s).extras["other"].tolist())
        for s in range(6)
    }
    assert len(others) > 1


def test_registered_and_run_by_evaluate():
    model, x, _ = _cnn()
    for name in GROUP:
        entry = metrics.get(name)
        assert not entry.default
    assert metrics.get("random-logit").needs == ("model", "method")
    assert metrics.get("non-sensitivity").lower_is_better
    settings = {
        "sensitivity-n": {"sizes": [4, 16], "runs": 4},
        "non-sensitivity": {"step": 32},
    }
    ev = evaluate(model, x[:3], methods=["saliency"], metrics=GROUP, metric_params=settings,
                  sanity_images=0, progress=False)  # fmt: skip
    for method in ("saliency", "random", "sobel"):
        assert set(ev.values[method]) == set(GROUP)
        assert all(v.shape == (3,) for v in ev.values[method].values())
    assert ev.values["saliency"]["input-invariance"].tolist() == [1.0] * 3
    assert ev.values["random"]["random-logit"].tolist() == pytest.approx([1.0] * 3)

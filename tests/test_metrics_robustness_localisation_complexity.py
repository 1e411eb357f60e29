"""Known answers, bad input and batch invariance of the robustness, localisation and
complexity metrics (issue 33); Quantus agreement is in
test_metrics_quantus_robustness_localisation_complexity.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnlens import metrics
from cnnlens.errors import InputError
from cnnlens.metrics.attribution_localisation import attribution_localisation
from cnnlens.metrics.complexity import complexity, effective_complexity, sparseness
from cnnlens.metrics.evaluate import evaluate
from cnnlens.metrics.relevance import relevance_mass_accuracy, relevance_rank_accuracy
from cnnlens.metrics.roc_auc import roc_auc
from cnnlens.metrics.top_k_intersection import default_k, top_k_intersection

LOCALISATION = {
    "relevance-mass-accuracy": relevance_mass_accuracy,
    "relevance-rank-accuracy": relevance_rank_accuracy,
    "top-k-intersection": top_k_intersection,
    "attribution-localisation": attribution_localisation,
    "auc": roc_auc,
}
COMPLEXITY = {
    "sparseness": sparseness,
    "complexity": complexity,
    "effective-complexity": effective_complexity,
}


def _masks(n=4, side=16):
    masks = torch.zeros(n, 1, side, side, dtype=torch.bool)
    for i in range(n):
        masks[i, :, i : i + 6, 2 * i : 2 * i + 5] = True  # 30 pixels each, placed differently
    return masks


def test_registered_as_optional_with_their_facts():
    for name in [*LOCALISATION, *COMPLEXITY]:
        m = metrics.get(name)
        assert not m.default and m.kind == "scalar" and "_" not in name
    assert all(metrics.get(n).needs == ("ground-truth",) for n in LOCALISATION)
    assert all(metrics.get(n).needs == () for n in COMPLEXITY)
    assert metrics.get("complexity").lower_is_better
    assert metrics.get("effective-complexity").lower_is_better
    assert not metrics.get("sparseness").lower_is_better
    assert not any(metrics.get(n).lower_is_better for n in LOCALISATION)


def test_localisation_known_answers():
    masks = _masks()
    perfect = masks.float() + 0.01 * torch.rand(
        masks.shape, generator=torch.Generator().manual_seed(0)
    )
    inverted = 1 - masks.float()
    k = 20  # below the 30-pixel object
    for f in LOCALISATION.values():
        kw = {"k": k} if f is top_k_intersection else {}
        if f not in (relevance_mass_accuracy, attribution_localisation):  # noise: mass off it
            assert torch.allclose(f(None, None, perfect, masks=masks, **kw).values, torch.ones(4))
    for f in (relevance_mass_accuracy, attribution_localisation):
        assert f(None, None, masks.float(), masks=masks).values.eq(1).all()
    for f in (relevance_mass_accuracy, relevance_rank_accuracy, roc_auc, attribution_localisation):
        assert f(None, None, inverted, masks=masks).values.eq(0).all()
    assert top_k_intersection(None, None, inverted, masks=masks, k=k).values.eq(0).all()
    # uniform relevance: mass share = area share; AUC of a constant map = 0.5 (all tied)
    flat = torch.ones(4, 1, 16, 16)
    share = 30 / 256
    assert torch.allclose(relevance_mass_accuracy(None, None, flat, masks=masks).values,
                          torch.full((4,), share))  # fmt: skip
    assert torch.allclose(roc_auc(None, None, flat, masks=masks).values, torch.full((4,), 0.5))
    w = attribution_localisation(None, None, flat, masks=masks, weighted=True).values
    assert torch.allclose(w, torch.ones(4))  # uniform relevance: mu = S_in / S_tot
    w = attribution_localisation(None, None, masks.float(), masks=masks, weighted=True).values
    assert torch.allclose(w, torch.full((4,), 1 / share))
    ci = top_k_intersection(None, None, perfect, masks=masks, k=k, concept_influence=True).values
    assert torch.allclose(ci, torch.full((4,), 1 / share))


def test_auc_is_the_pairwise_probability():
    g = torch.Generator().manual_seed(1)
    maps = (torch.rand(3, 1, 8, 8, generator=g) * 5).floor()  # many ties
    masks = torch.rand(3, 1, 8, 8, generator=g) < 0.3
    got = roc_auc(None, None, maps, masks=masks).values
    for i in range(3):
        pos, neg = maps[i][masks[i]], maps[i][~masks[i]]
        diff = pos[:, None] - neg[None, :]
        expected = ((diff > 0).double() + 0.5 * (diff == 0).double()).mean()
        assert float(got[i]) == pytest.approx(float(expected), abs=1e-6)


def test_empty_or_full_ground_truth_is_nan_and_boxes_work():
    maps = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    masks = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    masks[1, :, 2:5, 2:5] = True
    boxes = torch.tensor([[2, 2, 4, 4], [2, 2, 4, 4]])
    for f in LOCALISATION.values():
        kw = {"k": 4} if f is top_k_intersection else {}
        v = f(None, None, maps, masks=masks, **kw).values
        assert math.isnan(float(v[0])) and not math.isnan(float(v[1]))
        by_box = f(None, None, maps, boxes=boxes, **kw).values
        assert float(by_box[1]) == pytest.approx(float(v[1]), abs=1e-6)
    assert roc_auc(None, None, maps, masks=torch.ones(2, 1, 8, 8, dtype=bool)).values.isnan().all()


def test_localisation_bad_input():
    maps, masks = torch.rand(2, 1, 8, 8), _masks(2, 8)
    for f in LOCALISATION.values():
        with pytest.raises(InputError):
            f(None, None, maps, masks=masks[:, :, :4])
        with pytest.raises(InputError):
            f(None, None, maps)  # no ground truth
        with pytest.raises(InputError):
            f(None, None, maps[:, 0], masks=masks)
    for k in (0, 65, 2.5, True):
        with pytest.raises(InputError, match="k must be"):
            top_k_intersection(None, None, maps, masks=masks, k=k)
    assert default_k(224, 224) == 1000 and default_k(32, 32) == 20


def test_complexity_known_answers():
    d = 16 * 16
    one_hot = torch.zeros(3, 1, 16, 16)
    one_hot[:, 0, 5, 7] = torch.tensor([1.0, -3.0, 0.2])
    const = torch.full((3, 1, 16, 16), -0.7)
    zero = torch.zeros(3, 1, 16, 16)
    assert torch.allclose(sparseness(None, None, one_hot).values, torch.full((3,), (d - 1) / d))
    assert torch.allclose(sparseness(None, None, const).values, torch.zeros(3), atol=1e-6)
    assert sparseness(None, None, zero).values.eq(0).all()
    assert complexity(None, None, one_hot).values.eq(0).all()
    assert torch.allclose(complexity(None, None, const).values, torch.full((3,), math.log(d)))
    assert complexity(None, None, zero).values.isnan().all()
    assert effective_complexity(None, None, one_hot).values.eq(1).all()
    assert effective_complexity(None, None, const).values.eq(d).all()
    assert effective_complexity(None, None, zero).values.eq(0).all()
    # half the pixels at 1, half at 0.1: eps between counts only the high half
    half = torch.full((1, 1, 16, 16), 0.1)
    half[..., :8, :] = 1.0
    assert effective_complexity(None, None, half, eps=0.5).values.item() == d / 2
    assert effective_complexity(None, None, half, eps=0.05).values.item() == d
    # sign and scale do not matter; spreading relevance raises complexity, lowers sparseness
    g = torch.Generator().manual_seed(4)
    m = torch.randn(3, 1, 16, 16, generator=g)
    for f in COMPLEXITY.values():
        assert torch.allclose(f(None, None, m).values, f(None, None, -5 * m).values, atol=1e-5)
    assert (sparseness(None, None, m).values < sparseness(None, None, m**5).values).all()
    assert (complexity(None, None, m).values > complexity(None, None, m**5).values).all()
    for eps in (-0.1, 1.0, "x", None):
        with pytest.raises(InputError, match="eps"):
            effective_complexity(None, None, m, eps=eps)


def test_batch_invariance_of_map_metrics():
    g = torch.Generator().manual_seed(5)
    maps = torch.randn(5, 1, 16, 16, generator=g)
    masks = _masks(5)
    for f in [*LOCALISATION.values(), *COMPLEXITY.values()]:
        kw = {"masks": masks} if f in LOCALISATION.values() else {}
        whole = f(None, None, maps, **kw).values
        for i in range(5):
            kwi = {"masks": masks[i : i + 1]} if kw else {}
            one = f(None, None, maps[i : i + 1], **kwi).values
            assert torch.allclose(one, whole[i : i + 1], equal_nan=True, atol=1e-6), f.__name__


def test_evaluate_runs_them_by_name(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()  # fmt: skip
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    names = [*LOCALISATION, *COMPLEXITY]
    out = evaluate(model, x, methods=["saliency"], metrics=names, masks=_masks(),
                           sanity_images=0, progress=False)  # fmt: skip
    assert set(out.values["saliency"]) == set(names)
    assert out.values["sobel"]["auc"].shape == (4,)


# --- robustness ---------------------------------------------------------------------------

ROBUSTNESS = ["avg-sensitivity", "local-lipschitz-estimate", "continuity",
              "relative-input-stability", "relative-output-stability"]  # fmt: skip


def _robust_fns():
    from cnnlens.metrics.lipschitz import continuity, local_lipschitz_estimate
    from cnnlens.metrics.sensitivity import avg_sensitivity
    from cnnlens.metrics.stability import relative_input_stability, relative_output_stability

    return {
        "avg-sensitivity": avg_sensitivity,
        "local-lipschitz-estimate": local_lipschitz_estimate,
        "continuity": continuity,
        "relative-input-stability": relative_input_stability,
        "relative-output-stability": relative_output_stability,
    }


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()  # fmt: skip


def test_robustness_registered():
    for name in ROBUSTNESS:
        m = metrics.get(name)
        assert not m.default and m.lower_is_better and m.needs == ("model", "method")


def test_input_independent_maps_score_zero_and_linear_gradients_too():
    model = _tiny()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))

    def fixed(m, xs, t):  # the same map whatever the input
        return torch.ones(xs.shape[0], 1, 16, 16)

    for name, f in _robust_fns().items():
        r = f(model, x, None, method=fixed)
        assert r.values.eq(0).all(), name
    # a linear model's gradient does not depend on the input
    linear = nn.Sequential(nn.Flatten(), nn.Linear(256, 3)).eval()
    for name, f in _robust_fns().items():
        r = f(linear, x, None, method="saliency")
        assert (r.values.abs() < 1e-5).all(), name


def test_known_lipschitz_quotient():
    """e(x) = 3 x (a map linear in a one-channel input): ||3x - 3x'||_2 / ||x - x'||_2 = 3."""
    from cnnlens.metrics.lipschitz import continuity, local_lipschitz_estimate

    model = _tiny()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))

    def linear_map(m, xs, t):
        return 3 * xs

    r = local_lipschitz_estimate(model, x, None, method=linear_map, samples=4)
    assert torch.allclose(r.extras["samples"], torch.full((2, 4), 3.0), atol=1e-4)
    # continuity: L1 over L2 of the same difference, between 3 and 3 sqrt(#changed pixels)
    c = continuity(model, x, None, method=linear_map, shifts=[1, -2])
    assert (c.values >= 3 - 1e-4).all() and (c.values <= 3 * 16).all()


def test_robustness_grows_with_noise_and_is_seeded_and_batch_invariant():
    model = _tiny()
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    fns = _robust_fns()
    for name in ("avg-sensitivity", "local-lipschitz-estimate", "relative-input-stability",
                 "relative-output-stability"):  # fmt: skip
        f = fns[name]
        a = f(model, x, None, method="saliency", samples=3, seed=7, batch_size=5)
        b = f(model, x, None, method="saliency", samples=3, seed=7)
        assert torch.allclose(a.values, b.values, equal_nan=True, atol=1e-6), name
        c = f(model, x, None, method="saliency", samples=3, seed=8)
        assert not torch.allclose(a.extras["samples"], c.extras["samples"], equal_nan=True)
        one = f(model, x[2:3], None, method="saliency", samples=3, seed=7)
        assert torch.allclose(one.values, a.values[2:3], equal_nan=True, atol=1e-5), name
    sens = fns["avg-sensitivity"]
    small = sens(model, x, None, method="saliency", radius=0.001, samples=3).values
    large = sens(model, x, None, method="saliency", radius=0.3, samples=3).values
    assert (small < large).all()
    c = fns["continuity"]
    whole = c(model, x, None, method="saliency", batch_size=3).values
    assert torch.allclose(c(model, x[1:2], None, method="saliency").values, whole[1:2])


def test_relative_stability_leaves_out_copies_that_change_class():
    from cnnlens.metrics.stability import relative_input_stability

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(3 * 14 * 14, 3)).eval()
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    r = relative_input_stability(model, x, None, method="saliency", std=1.0, samples=8)
    s = r.extras["samples"]
    assert s.isnan().any() and (~s.isnan()).any()
    for i in range(6):
        kept = s[i][~s[i].isnan()]
        expected = kept.max() if kept.numel() else torch.tensor(float("nan"))
        assert torch.allclose(r.values[i], expected, equal_nan=True)


def test_robustness_bad_input():
    model = _tiny()
    x = torch.rand(2, 1, 16, 16)
    fns = _robust_fns()
    for name, f in fns.items():
        with pytest.raises(InputError, match="method"):
            f(model, x, None)
        with pytest.raises(InputError):
            f(model, x, None, method="no-such-method")
        if name != "continuity":
            with pytest.raises(InputError, match="samples"):
                f(model, x, None, method="saliency", samples=0)
    for name in ("local-lipschitz-estimate", "relative-input-stability"):
        with pytest.raises(InputError, match="std"):
            fns[name](model, x, None, method="saliency", std=-1)
    for shifts in ([], [0], [17], ["a"], [1.5], 3):
        with pytest.raises(InputError, match="shifts"):
            fns["continuity"](model, x, None, method="saliency", shifts=shifts)


def test_evaluate_runs_robustness_by_name(tmp_path):
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    params = {n: {"samples": 2} for n in ROBUSTNESS if n != "continuity"}
    out = evaluate(_tiny(), x, methods=["saliency"], metrics=ROBUSTNESS, sanity_images=0,
                   progress=False, metric_params=params)  # fmt: skip
    assert set(out.values["saliency"]) == set(ROBUSTNESS)


def test_robustness_spends_only_the_passes_it_needs():
    """Images the model sees, counted by a forward hook: the explanations of the N x S
    copies, plus N forwards only where the metric needs the logits of the inputs (the
    predicted class, or relative output stability's h(x)), plus the copies' logits for
    the stability metrics; a given target costs one probe image and is still checked."""
    from cnnlens.errors import TargetError

    model = _tiny()
    seen = []
    handle = model.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))

    def grad(m, x, t):  # saliency by hand, so every pass runs on the hooked model
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(m(x).gather(1, t[:, None]).sum(), x)
        return g.abs().amax(1, keepdim=True)

    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 0])
    maps = grad(model, x, y)
    n, s = 4, 3
    _robust_fns()["avg-sensitivity"](model, x, maps, y, method=grad, samples=s)
    try:  # (the call above made chunk_size's one-image probe, cached per model and shape)
        for name, f in _robust_fns().items():
            k = dict(shifts=[-2, 1, 3]) if name == "continuity" else dict(samples=s)
            stable = name.startswith("relative")
            for target, probe in ((y, 1), (None, n)):
                seen.clear()
                f(model, x, maps, target, method=grad, **k)
                extra = n * s if stable else 0
                assert sum(seen) == (n if stable else probe) + n * s + extra, (name, target)
            with pytest.raises(TargetError, match="lie in"):
                f(model, x, maps, torch.tensor([0, 1, 2, 3]), method=grad, **k)
    finally:
        handle.remove()


def test_balanced_chunks_are_equal_and_as_few():
    from cnnlens.metrics._robustness import balanced

    assert balanced(40, 32) == 20 and balanced(64, 32) == 32 and balanced(7, 32) == 7
    for total in range(1, 130):
        for size in range(1, 70):
            b = balanced(total, size)
            assert b <= size and -(-total // b) == -(-total // size), (total, size)
            assert b * (-(-total // b) - 1) < total  # no chunk left empty

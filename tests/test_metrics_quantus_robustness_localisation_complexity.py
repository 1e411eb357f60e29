"""Agreement with Quantus 0.6 on the robustness, localisation and complexity metrics.

Same maps, masks, model and inputs for both. Localisation and complexity metrics run
no model: tolerance 1e-5 absolute (Quantus works in float32 numpy and adds epsilons:
1e-7 to every value in Sparseness, 1e-12 inside the logarithm in Complexity, 1e-9 in
AttributionLocalisation's denominator). Quantus' normalisation (``normalise_by_max``)
is left on where it cannot change the score (ratios, ranks) and turned off otherwise.
Robustness metrics draw noise: Quantus is given a ``perturb_func`` that replays
cnnlens' seeded draws, so both see the same perturbed images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlens import metrics

pytestmark = pytest.mark.numerics

quantus = pytest.importorskip("quantus")

TOL = 1e-5


def _np(t):
    return t.detach().cpu().numpy()


@pytest.fixture(scope="module")
def loc():
    """Maps that peak on the object in some images and off it in others, real masks."""
    from cnnlens.data import load

    test = load("shapes", split="test")
    x, _ = test.tensors(range(8))
    masks = test.masks[:8]
    g = torch.Generator().manual_seed(6)
    boost = torch.rand(8, 1, 1, 1, generator=g) * 2 - 1
    maps = torch.rand(8, 1, 32, 32, generator=g) + boost * masks.float()
    return x, maps, masks


def _quantus_loc(metric, x, maps, masks):
    return np.asarray(
        metric(
            model=None,
            x_batch=_np(x),
            y_batch=np.zeros(len(x), int),
            a_batch=_np(maps),
            s_batch=_np(masks).astype(float),
            device="cpu",
        ),  # fmt: skip
        dtype=np.float64,
    )


def test_relevance_mass_accuracy_agrees(loc):
    x, maps, masks = loc
    pos = maps.clamp_min(0.01)  # Quantus' normalise_by_max keeps the sign only for max > 0
    ours = metrics.get("relevance-mass-accuracy")
    from cnnlens.metrics.relevance import relevance_mass_accuracy

    assert ours.needs == ("ground-truth",)
    for m, kw in ((pos, {}), (maps, {"normalise": False})):
        mine = _np(relevance_mass_accuracy(None, None, m, masks=masks).values)
        theirs = _quantus_loc(
            quantus.RelevanceMassAccuracy(disable_warnings=True, **kw), x, m, masks
        )
        assert np.abs(mine - theirs).max() < TOL
    assert np.ptp(mine) > 0.1  # the maps differ in how much mass sits on the object


def test_relevance_rank_accuracy_agrees(loc):
    from cnnlens.metrics.relevance import relevance_rank_accuracy

    x, maps, masks = loc
    mine = _np(relevance_rank_accuracy(None, None, maps, masks=masks).values)
    theirs = _quantus_loc(quantus.RelevanceRankAccuracy(disable_warnings=True), x, maps, masks)
    assert np.abs(mine - theirs).max() < TOL
    assert mine.min() < 0.5 < mine.max()


@pytest.mark.parametrize("concept", [False, True])
def test_top_k_intersection_agrees(loc, concept):
    from cnnlens.metrics.top_k_intersection import top_k_intersection

    x, maps, masks = loc
    for k in (20, 100):
        mine = _np(top_k_intersection(None, None, maps, masks=masks, k=k,
                                      concept_influence=concept).values)  # fmt: skip
        q = quantus.TopKIntersection(k=k, concept_influence=concept, disable_warnings=True)
        theirs = _quantus_loc(q, x, maps, masks)
        assert np.abs(mine - theirs).max() < TOL


def test_attribution_localisation_agrees_and_quantus_weighting_is_inverted(loc):
    """Unweighted: equal to Quantus' AttributionLocalisation on positive relevance.

    Weighted: Kohlbrenner et al. (2020, Sec. IV-B) define ``mu_w = mu · S_tot / S_in``;
    quantus/metrics/localisation/attribution_localisation.py, ``evaluate_batch``,
    multiplies by ``ratio = size_bbox / size_data`` (the inverse) and computes
    ``size_data = x_batch[2:].size`` (the size of the batch minus two images, not of
    one image's H x W). So Quantus' weighted score is ``mu · S_in / ((N-2) C H W)``;
    the test asserts that relation.
    """
    from cnnlens.metrics.attribution_localisation import attribution_localisation

    x, maps, masks = loc
    mu = _np(attribution_localisation(None, None, maps, masks=masks).values)
    q = quantus.AttributionLocalisation(abs=False, normalise=False, positive_attributions=True,
                                        disable_warnings=True)  # fmt: skip
    assert np.abs(mu - _quantus_loc(q, x, maps, masks)).max() < TOL
    mine_w = _np(attribution_localisation(None, None, maps, masks=masks, weighted=True).values)
    s_in = _np(masks.flatten(1).sum(1)).astype(np.float64)
    assert np.abs(mine_w - mu * 32 * 32 / s_in).max() < TOL
    q = quantus.AttributionLocalisation(abs=False, normalise=False, positive_attributions=True,
                                        weighted=True, disable_warnings=True)  # fmt: skip
    theirs_w = _quantus_loc(q, x, maps, masks)
    assert np.abs(theirs_w - mu * s_in / x[2:].numel()).max() < TOL
    assert np.all(np.abs(mine_w - theirs_w) > 0.1)


def test_auc_agrees_with_ties(loc):
    from cnnlens.metrics.roc_auc import roc_auc

    x, maps, masks = loc
    tied = (maps * 4).round() / 4  # few distinct values: tied scores across classes
    for m in (maps, tied):
        mine = _np(roc_auc(None, None, m, masks=masks).values)
        theirs = _quantus_loc(quantus.AUC(disable_warnings=True), x, m, masks)
        assert np.abs(mine - theirs).max() < TOL
    assert mine.min() < 0.5 < mine.max()


@pytest.fixture(scope="module")
def cmaps():
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(6, 1, 16, 16, generator=g) ** 3  # signed, heavy-tailed
    maps[1, :, :8] = 0  # half zero
    maps[2] = 0
    maps[2, 0, 3, 4] = 2.0  # one-hot
    return torch.randn(6, 3, 16, 16, generator=g), maps


def _quantus_cx(metric, x, maps):
    """Quantus one image per call: its ``normalise_by_max`` divides by the largest
    magnitude of the whole batch (quantus/metrics/base.py, ``general_preprocess``:
    ``a_batch = self.normalise_func(a_batch)`` with no axes), so an image's Sparseness
    and EffectiveComplexity depend on the other images of the call; cnnlens normalises
    each map by its own maximum."""
    return np.asarray(
        [metric(model=None, x_batch=_np(x[i : i + 1]), y_batch=np.zeros(1, int),
                a_batch=_np(maps[i : i + 1]), device="cpu")[0] for i in range(len(x))],
        dtype=np.float64,
    )  # fmt: skip


def test_sparseness_and_complexity_agree(cmaps):
    """Quantus' Sparseness (complexity/sparseness.py, ``evaluate_batch``) adds 1e-7 to the
    max-normalised magnitudes before the Gini index: equal to cnnlens on the shifted map;
    on the map itself the shift moves a one-hot 16x16 map's 255/256 by 3e-5."""
    from cnnlens.metrics.complexity import complexity, sparseness

    x, maps = cmaps
    theirs = _quantus_cx(quantus.Sparseness(disable_warnings=True), x, maps)
    mag = maps.abs()
    shifted = mag / mag.flatten(1).amax(1).view(-1, 1, 1, 1) + 1e-7
    assert np.abs(_np(sparseness(None, None, shifted).values) - theirs).max() < TOL
    mine = _np(sparseness(None, None, maps).values)
    assert mine[2] == pytest.approx(255 / 256, abs=1e-6)
    assert np.abs(mine - theirs).max() < 1e-4
    mine = _np(complexity(None, None, maps).values)
    theirs = _quantus_cx(quantus.Complexity(disable_warnings=True), x, maps)
    assert np.abs(mine - theirs).max() < TOL


def test_effective_complexity_agrees_per_image(cmaps):
    from cnnlens.metrics.complexity import effective_complexity

    x, maps = cmaps
    for eps in (1e-5, 0.1, 0.5):
        mine = _np(effective_complexity(None, None, maps, eps=eps).values)
        q = quantus.EffectiveComplexity(eps=eps, disable_warnings=True)
        assert np.array_equal(mine, _quantus_cx(q, x, maps))
    assert len(set(mine.tolist())) > 2
    # Quantus on the whole batch: thresholds relative to the batch's largest magnitude
    batch = np.asarray(
        q(model=None, x_batch=_np(x), y_batch=np.zeros(len(x), int), a_batch=_np(maps),
          device="cpu"), dtype=np.float64,
    )  # fmt: skip
    assert (batch < mine).any() and (batch <= mine).all()


# --- robustness: same model, maps and perturbed images ----------------------------------


class SmallCNN(torch.nn.Module):
    def __init__(self, k=5, c=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(c, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, k)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(h.amax((2, 3)))


def _saliency(model, x, target):
    from cnnlens import explain

    return explain(model, x, method="saliency", target=target).maps


def _q_explain(model, inputs, targets, **kwargs):
    x, t = torch.as_tensor(inputs), torch.as_tensor(targets)
    return _np(_saliency(model, x, t))


@pytest.fixture(scope="module")
def rob():
    g = torch.Generator().manual_seed(5)
    model = SmallCNN().eval()
    x = torch.randn(4, 3, 16, 16, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, _saliency(model, x, y), y


def _replay(noise):
    """A Quantus ``perturb_func`` that adds ``noise(step)`` ``[N,C,H,W]`` on its step-th call."""
    step = [0]

    def perturb(arr, indices, **kwargs):
        out = arr + _np(noise(step[0])).reshape(arr.shape)
        step[0] += 1
        return out

    return perturb


def _gaussian(x, std, samples, seed=0):
    from cnnlens.seeding import Draws

    draws = Draws(seed, samples, x.shape[1:], kind="normal")
    return lambda s: (std * draws(torch.tensor([s]))).expand_as(x)


def _q_run(metric, model, x, y, maps):
    return np.asarray(
        metric(model=model, x_batch=_np(x), y_batch=_np(y), a_batch=_np(maps), device="cpu",
               explain_func=_q_explain),
        dtype=np.float64,
    )  # fmt: skip


def test_avg_and_max_sensitivity_agree(rob):
    from cnnlens.seeding import Draws

    model, x, maps, y = rob
    samples, radius = 5, 0.05
    flat = x.flatten(1)
    scale = (radius * (flat.amax(1) - flat.amin(1))).view(-1, 1, 1, 1)
    draws = Draws(0, samples, x.shape[1:], kind="uniform")

    def noise(s):
        return (2 * draws(torch.tensor([s])) - 1) * scale

    from cnnlens.metrics.sensitivity import avg_sensitivity

    for ours, cls in ((avg_sensitivity, quantus.AvgSensitivity),
                      (metrics.max_sensitivity, quantus.MaxSensitivity)):  # fmt: skip
        mine = ours(model, x, maps, y, method=_saliency, radius=radius, samples=samples).values
        q = cls(nr_samples=samples, perturb_func=_replay(noise), normalise=False, abs=False,
                disable_warnings=True)  # fmt: skip
        theirs = _q_run(q, model, x, y, maps)
        assert np.abs(_np(mine) - theirs).max() < 1e-4 * max(1.0, np.abs(theirs).max())


def test_local_lipschitz_estimate_agrees(rob):
    from cnnlens.metrics.lipschitz import local_lipschitz_estimate

    model, x, maps, y = rob
    samples, std = 5, 0.1
    mine = local_lipschitz_estimate(model, x, maps, y, method=_saliency, std=std, samples=samples)
    q = quantus.LocalLipschitzEstimate(
        nr_samples=samples, perturb_func=_replay(_gaussian(x, std, samples)), normalise=False,
        abs=False, disable_warnings=True,
    )  # fmt: skip
    theirs = _q_run(q, model, x, y, maps)
    assert np.abs(_np(mine.values) - theirs).max() < 1e-4 * np.abs(theirs).max()


def test_continuity_agrees_on_the_same_shifts(rob):
    """Quantus' Continuity translates by ``-W + k dx``, ``dx = (2W + 1) // nr_steps``
    (8 steps at W = 16: -12 ... 16 by 4, including the no-op 0, which scores 0)."""
    from cnnlens.metrics.lipschitz import continuity

    model, x, maps, y = rob
    shifts = [-12, -8, -4, 4, 8, 12, 16]
    mine = continuity(model, x, maps, y, method=_saliency, shifts=shifts).values
    q = quantus.Continuity(nr_steps=8, normalise=False, abs=False, disable_warnings=True)
    theirs = _q_run(q, model, x, y, maps)
    assert np.abs(_np(mine) - theirs).max() < 1e-4 * np.abs(theirs).max()


@pytest.mark.parametrize("kind", ["input", "output"])
def test_relative_stability_agrees_and_quantus_drops_images_with_one_changed_copy(rob, kind):
    """With small noise no copy changes class and both agree. With large noise some copies
    do: Agarwal et al. take the maximum over the copies that keep the class; Quantus
    (robustness/relative_{input,output}_stability.py, ``evaluate_batch``) sets those
    copies to NaN and then takes ``np.max``, so one changed copy makes the image NaN."""
    from cnnlens.metrics import stability

    model, x, maps, y = rob
    ours = getattr(stability, f"relative_{kind}_stability")
    cls = quantus.RelativeInputStability if kind == "input" else quantus.RelativeOutputStability
    samples = 6
    for std in (0.02, 1.5):
        r = ours(model, x, maps, y, method=_saliency, std=std, samples=samples)
        q = cls(nr_samples=samples, perturb_func=_replay(_gaussian(x, std, samples)),
                disable_warnings=True)  # fmt: skip
        theirs = _q_run(q, model, x, y, maps)
        changed = r.extras["samples"].isnan().any(1).numpy()
        mine = _np(r.values)
        ok = ~changed
        assert np.abs(mine[ok] - theirs[ok]).max() < 1e-4 * np.abs(theirs[ok]).max()
        if std == 0.02:
            assert not changed.any()
        else:
            assert changed.any() and np.isnan(theirs[changed]).all()
            assert np.isfinite(mine[changed]).any()

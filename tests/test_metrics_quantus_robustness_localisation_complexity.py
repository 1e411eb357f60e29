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

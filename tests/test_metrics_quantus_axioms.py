"""Agreement with Quantus 0.6 on sensitivity-n, sufficiency, random logit, non-sensitivity
and input invariance (issue 33).

Same model, images, maps and settings, one-channel images (Quantus moves each channel of
a pixel on its own, cnnlens pixels; the two coincide on one channel). Tolerance 1e-5 on
float32 scores and correlations of them, unless said. Where Quantus measures another
thing than the paper, the test shows the difference and names the function and line
(Quantus source: site-packages/quantus/).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import cnnlens
from cnnlens.metrics import _faithfulness as F
from cnnlens.metrics.input_invariance import input_invariance, shifted_model
from cnnlens.metrics.non_sensitivity import non_sensitivity
from cnnlens.metrics.random_logit import random_logit
from cnnlens.metrics.sensitivity_n import sensitivity_n
from cnnlens.metrics.sufficiency import map_distances, sufficiency

pytestmark = pytest.mark.numerics

quantus = pytest.importorskip("quantus")

TOL = 1e-5


class SmallCNN(nn.Module):
    def __init__(self, k=5, padding=1, crop=False):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=padding)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, k)
        self.crop = crop

    def forward(self, x):
        if self.crop:  # pixels outside the centre have no effect at all
            x = x[:, :, 4:12, 4:12]
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(h.mean((2, 3)))


def _case(n=4, size=16, **kw):
    g = torch.Generator().manual_seed(5)
    model = SmallCNN(**kw).eval()
    x = torch.randn(n, 1, size, size, generator=g)
    maps = torch.rand(n, 1, size, size, generator=g) - 0.3
    with torch.no_grad():
        y = model(x).argmax(1)
    q = dict(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps.numpy(), device="cpu")
    return model, x, maps, y, q


def test_sensitivity_n_quantus_correlates_across_images_not_subsets():
    """Quantus ``SensitivityN`` removes the top-attributed features cumulatively, records
    the sum of only the step's attributions (``evaluate_batch``, sensitivity_n.py line
    404) and correlates, per step, across the *images* of the first batch only
    (``custom_postprocess``, lines 326-331): one list per batch, not a score per image.
    The paper correlates, per image and size n, the sum over a random subset of n with
    the drop its removal causes. cnnlens' pieces reproduce Quantus' numbers exactly;
    its paper score is another quantity (and the cumulative sum would differ too)."""
    model, x, maps, y, q = _case(n=6)
    step, share = 8, 0.5
    theirs = np.asarray(
        quantus.SensitivityN(
            features_in_step=step, n_max_percentage=share, perturb_baseline=0.0,
            return_aggregate=False, disable_warnings=True,
        )(**q, softmax=True)
    )  # fmt: skip
    groups = F.pixel_groups(maps, step, descending=True)
    count = 256 // step
    curves = F.cumulative(
        model, x, y, groups, torch.full((6,), count), start=x,
        finish=torch.zeros_like(x), score="probability",
    )  # fmt: skip
    drops = curves[:, :1] - curves[:, 1:]
    steps = F.group_sums(maps, groups, count)
    keep = int(share * 256 // step)
    as_quantus = F.pearson(steps.T[:keep], drops.T[:keep]).numpy()
    assert theirs.shape == (keep,)
    assert np.abs(as_quantus - theirs).max() < 1e-4
    cumulative = F.pearson(steps.cumsum(1).T[:keep], drops.T[:keep]).numpy()
    assert np.abs(cumulative - theirs).max() > 0.05
    ours = sensitivity_n(model, x, maps, y, sizes=[step, 64], runs=20, baseline=0.0)
    assert ours.values.shape == (6,) and ours.curves.shape == (6, 2)


def _clustered_maps(g):
    """Three tight clusters of two maps and one far map: every map but the far one has a
    neighbour within 0.3 of the largest distance."""
    centres = torch.rand(3, 1, 16, 16, generator=g)
    near = centres.repeat_interleave(2, 0) + 0.05 * torch.rand(6, 1, 16, 16, generator=g)
    far = 3 + torch.rand(1, 1, 16, 16, generator=g)
    return torch.cat([near, far])


def test_sufficiency_equals_quantus_where_a_map_has_neighbours():
    """Equal wherever an image has a neighbour. Where none has, Quantus divides by inf
    and gives 0 (``Sufficiency.evaluate_batch``, sufficiency.py line 307); cnnlens gives
    NaN (no evidence either way)."""
    g = torch.Generator().manual_seed(3)
    model, x, _, y, q = _case(n=7)
    maps = _clustered_maps(g)
    q = {**q, "a_batch": maps.numpy()}
    theirs = np.asarray(
        quantus.Sufficiency(threshold=0.3, disable_warnings=True)(**q, softmax=True), dtype=float
    )
    ours = sufficiency(model, x, maps, threshold=0.3)
    has = ours.extras["neighbours"] > 0
    assert has[:6].all() and not has[6]
    assert np.abs(ours.values[:6].numpy() - theirs[:6]).max() < TOL
    assert np.isnan(ours.values[6].item()) and theirs[6] == 0.0


def test_sufficiency_euclidean_fails_in_quantus():
    """Quantus passes ``V=None`` to ``cdist`` whatever the distance
    (``Sufficiency.custom_batch_preprocess``, sufficiency.py line 258), which SciPy refuses
    for the Euclidean distance; cnnlens' distances equal SciPy's own."""
    from scipy.spatial.distance import cdist

    g = torch.Generator().manual_seed(3)
    model, x, _, y, q = _case(n=7)
    maps = _clustered_maps(g)
    stock = quantus.Sufficiency(threshold=0.3, distance_func="euclidean", disable_warnings=True)
    with pytest.raises(TypeError):
        stock(**{**q, "a_batch": maps.numpy()}, softmax=True)
    flat = maps.flatten(1).double().numpy()
    for name in ("euclidean", "seuclidean"):  # up to scale: SciPy's variance stacks both sets
        want, ours = cdist(flat, flat, name), map_distances(maps, name).numpy()
        assert np.abs(ours / ours.max() - want / want.max()).max() < 1e-9


def _saliency(model, inputs, targets, **_):
    x = torch.as_tensor(np.asarray(inputs))
    return cnnlens.explain(
        model, x, method="saliency", target=torch.as_tensor(targets)
    ).maps.numpy()


def test_random_logit_equals_quantus_with_spearman_on_two_classes():
    """Two classes: the other class is fixed, so Quantus' ``np.random`` draw and cnnlens'
    seeded one agree. Spearman is blind to Quantus' batch-wide normalisation."""
    model, x, maps, y, q = _case(k=2)
    e = cnnlens.explain(model, x, method="saliency", target=y)
    theirs = quantus.RandomLogit(
        num_classes=2, similarity_func=quantus.similarity_func.correlation_spearman,
        disable_warnings=True,
    )(**{**q, "a_batch": e.maps.numpy()}, explain_func=_saliency)  # fmt: skip
    ours = random_logit(model, x, e, similarity="spearman")
    assert torch.equal(ours.extras["other"], 1 - y)
    assert np.abs(ours.values.numpy() - np.asarray(theirs)).max() < TOL


def test_random_logit_quantus_ssim_is_one_dimensional():
    """Quantus' default ``ssim`` (functions/similarity_func.py lines 296-301) gets the maps
    flattened (``RandomLogit.evaluate_batch``, random_logit.py line 304), so it is the
    SSIM of 1-D signals with a 7-sample window, after dividing each batch of maps by its
    own largest value. The paper compares images: cnnlens' SSIM is 2-D (7 x 7 window,
    each map scaled to [0, 1]) and differs."""
    from skimage.metrics import structural_similarity

    model, x, maps, y, q = _case(k=2)
    e = cnnlens.explain(model, x, method="saliency", target=y)
    theirs = np.asarray(
        quantus.RandomLogit(num_classes=2, disable_warnings=True)(
            **{**q, "a_batch": e.maps.numpy()}, explain_func=_saliency
        )
    )
    a = e.maps.numpy().reshape(4, -1)
    b = _saliency(model, x, 1 - y).reshape(4, -1)
    a, b = a / np.abs(a).max(), b / np.abs(b).max()
    one_d = [
        structural_similarity(u, v, data_range=float(np.ptp(np.concatenate([u, v]))))
        for u, v in zip(a, b, strict=True)
    ]
    assert np.abs(np.asarray(one_d) - theirs).max() < 1e-6
    ours = random_logit(model, x, e).values.numpy()
    assert np.abs(ours - theirs).max() > 0.02


def test_non_sensitivity_equals_quantus():
    """A model that never sees the border (4 px): those pixels have no effect at all.
    Maps are 0 on a band crossing the seen centre and each has largest |a| 1 (Quantus
    divides by the batch's largest, cnnlens by each image's)."""
    model, x, _, y, q = _case(crop=True)
    g = torch.Generator().manual_seed(4)
    maps = torch.rand(4, 1, 16, 16, generator=g) + 0.1
    maps[:, :, 6:10, :] = 0.0
    maps[:, 0, 0, 0] = 1.0
    theirs = quantus.NonSensitivity(
        features_in_step=1, perturb_baseline=0.0, disable_warnings=True
    )(**{**q, "a_batch": maps.numpy()}, softmax=True)
    ours = non_sensitivity(model, x, maps, baseline=0.0)
    assert ours.values.tolist() == [float(v) for v in theirs]
    # 16 x 16 - 8 x 8 unseen pixels mostly attributed, the 4 x 8 band seen yet not
    assert (ours.values >= 32).all() and (ours.values <= 256).all()


def test_non_sensitivity_quantus_fails_for_groups():
    """With ``features_in_step`` > 1 Quantus compares a ``[N, steps]`` array with a ``[N,
    features]`` one (``NonSensitivity.evaluate_batch``, non_sensitivity.py line 356) and
    fails; cnnlens scores groups (a group is without attribution when all its pixels are)."""
    model, x, maps, y, q = _case(crop=True)
    stock = quantus.NonSensitivity(features_in_step=4, perturb_baseline=0.0, disable_warnings=True)
    with pytest.raises(ValueError):
        stock(**q, softmax=True)
    r = non_sensitivity(model, x, maps, step=4)
    assert r.extras["no_effect"].shape == (4, 64)


def test_input_invariance_equals_quantus_without_padding():
    """No padding in the first layer: Quantus' shifted model (``add_mean_shift_to_first_layer``)
    and cnnlens' are the same; saliency is invariant, input x gradient is not (the paper's
    finding), in both."""
    model, x, _, y, q = _case(padding=0)
    for method, expected in (("saliency", True), ("input-x-gradient", False)):
        e = cnnlens.explain(model, x, method=method, target=y)

        def fn(model, inputs, targets, method=method, **_):
            x = torch.as_tensor(np.asarray(inputs))
            t = torch.as_tensor(targets)
            return cnnlens.explain(model, x, method=method, target=t).maps.numpy()

        theirs = quantus.InputInvariance(disable_warnings=True)(
            **{**q, "a_batch": e.maps.numpy()}, explain_func=fn
        )
        ours = input_invariance(model, x, e)
        assert [bool(v) for v in theirs] == [expected] * 4
        assert ours.values.tolist() == [float(expected)] * 4


def test_input_invariance_quantus_shift_is_wrong_at_padded_borders():
    """With zero padding ``W m`` differs near the borders; Quantus subtracts one value per
    channel, the smallest over positions (``PyTorchModel.add_mean_shift_to_first_layer``,
    helpers/model/pytorch_model.py line 412), so its shifted network does not compute
    the same function on ``x + m``. cnnlens' does (to float rounding)."""
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model, x, _, _, _ = _case(padding=1)
    theirs = PyTorchModel(model, softmax=False, device="cpu").add_mean_shift_to_first_layer(
        -1.0, x[:1].shape
    )
    ours = shifted_model(model, x, -1.0)
    with torch.no_grad():
        want = model(x)
        assert (ours(x - 1.0) - want).abs().max() < 1e-5
        assert (theirs(x - 1.0) - want).abs().max() > 1e-3

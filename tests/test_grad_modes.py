"""The Python API in users' evaluation code (issue 28, point 8): every method and the
gradient-needing metrics work inside ``torch.no_grad()`` and ``torch.inference_mode()``
and give what they give outside; inputs the model cannot take (channels, dtype) are
refused up front with an :class:`InputError` naming the problem."""

from __future__ import annotations

import contextlib

import pytest
import torch

import cnnlens
from cnnlens import metrics
from cnnlens.errors import InputError
from cnnlens.hooks import model_fingerprint, same_fingerprint
from test_batch_invariance import images, settings, tiny_net

MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


@pytest.fixture(scope="module")
def setup():
    model = tiny_net()
    return model, settings(model)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("method", list(cnnlens.methods()))
def test_every_method_works_under_no_grad_and_inference_mode(setup, method, mode):
    model, cheap = setup
    params = dict(cheap[method])
    accepted = cnnlens.attribution.get(method).accepted(params)
    x = images(2)
    before = model_fingerprint(model)
    seeded = accepted is None or "seed" in accepted
    kw = {"seed": 0} if seeded else {}
    reference = cnnlens.explain(model, x, method=method, **kw, **params)
    with MODES[mode]():
        got = cnnlens.explain(model, x.clone(), method=method, **kw, **params)
        assert not torch.is_grad_enabled()
        if mode == "inference_mode":
            assert torch.is_inference_mode_enabled()
    assert same_fingerprint(before, model_fingerprint(model))
    assert not got.maps.is_inference()
    torch.testing.assert_close(got.maps, reference.maps, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_an_inference_tensor_target_and_baseline(setup, mode):
    model, _ = setup
    x = images(2)
    reference = cnnlens.explain(
        model, x, method="integrated-gradients", target=1, steps=4, baseline=torch.zeros(3, 1, 1)
    )
    with MODES[mode]():
        target, baseline = torch.tensor([1, 1]), torch.zeros(3, 1, 1)
        got = cnnlens.explain(
            model, x.clone(), method="integrated-gradients", target=target, steps=4,
            baseline=baseline,
        )  # fmt: skip
    torch.testing.assert_close(got.maps, reference.maps)


GRADIENT_METRICS = {
    "max_sensitivity": lambda m, x, e: metrics.max_sensitivity(m, x, e, samples=2),
    "randomisation_check": lambda m, x, e: metrics.randomisation_check(m, x, e),
    "completeness": lambda m, x, e: metrics.completeness(m, x, e),
    "infidelity": lambda m, x, e: metrics.infidelity(m, x, e, samples=4),
    "road": lambda m, x, e: metrics.road(m, x, e),
    "deletion": lambda m, x, e: metrics.deletion(m, x, e, step=32),
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("metric", sorted(GRADIENT_METRICS))
def test_metrics_work_under_no_grad_and_inference_mode(setup, metric, mode):
    model, _ = setup
    x = images(2)
    e = cnnlens.explain(model, x, method="integrated-gradients", steps=4)
    score = GRADIENT_METRICS[metric]
    reference = score(model, x, e)
    with MODES[mode]():
        got = score(model, x.clone(), cnnlens.explain(model, x.clone(), "integrated-gradients",
                                                      steps=4))  # fmt: skip
    torch.testing.assert_close(got.values, reference.values, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", [None, *sorted(MODES)])
def test_wrong_channels_and_dtype_are_input_errors(setup, mode):
    model, _ = setup
    context = MODES[mode]() if mode else contextlib.nullcontext()
    gray = images(2)[:, :1]
    with context:
        for method in ("saliency", "grad-cam", "rise", "occlusion"):
            with pytest.raises(InputError, match="3-channel images.*got inputs with 1 channel"):
                cnnlens.explain(model, gray, method=method)
            with pytest.raises(InputError, match="inputs are torch.float64.*torch.float32"):
                cnnlens.explain(model, images(2).double(), method=method)
        maps = torch.rand(2, 1, 16, 16)
        with pytest.raises(InputError, match="3-channel images"):
            metrics.deletion(model, gray, maps)
        with pytest.raises(InputError, match="float64"):
            metrics.infidelity(model, images(2).double(), maps)
        with pytest.raises(InputError, match="float64"):
            metrics.max_sensitivity(model, images(2).double(), maps, method="saliency")

"""Fast copies (cnnlens.accel): each kind computes what the model does, and a copy
that cannot be made falls back to the model as given, saying why in a debug line."""

from __future__ import annotations

import logging
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlens import accel, explain, nets
from cnnlens.accel.fast import _FAST_COPY
from helpers import with_bn_statistics

pytestmark = pytest.mark.numerics


def _batchnorms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def test_forward_copy_is_folded_channels_last_and_equals_the_model():
    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=5))
    x = torch.randn(4, 3, 32, 32)
    copy = accel.fast_copy(model, x, "forward")
    assert copy.layout == torch.channels_last and _batchnorms(copy.module) == 0
    relus = [m for m in copy.module.modules() if type(m) is nn.ReLU]
    assert relus and all(r.inplace for r in relus)
    assert _batchnorms(accel.fast_copy(model, x, "exact").module) == _batchnorms(model) == 7
    with torch.no_grad():
        torch.testing.assert_close(accel.forward(model, x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="kind"):
        accel.fast_copy(model, x, "fused")


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = F.relu(self.conv(x))
        if y.mean() > 0:  # data-dependent control flow
            y = y * 2
        return y.flatten(1)


def test_forward_of_a_model_with_control_flow_equals_the_model():
    x = torch.randn(2, 3, 8, 8)
    model = _Branchy().eval()
    with torch.no_grad():
        torch.testing.assert_close(accel.forward(model, x), model(x))


@pytest.mark.parametrize("name", ["occlusion", "lime", "kernel-shap", "rise", "score-cam"])
def test_forward_only_methods_on_the_fast_copy_equal_the_model(name, monkeypatch):
    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=5))
    x = torch.rand(2, 3, 32, 32)
    # 4 x 4 cells and 200 coalitions: a well-posed regression, so rounding stays small
    params = {"n_samples": 200, "segments": "grid:4"} if name in ("lime", "kernel-shap") else {}
    if name == "rise":
        params = {"n_masks": 64}
    if name != "score-cam":
        params["seed"] = 0
    fast = explain(model, x, name, target=1, **params).maps
    assert _batchnorms(_FAST_COPY["forward"][model][1].module) == 0  # the folded copy ran
    monkeypatch.setattr("cnnlens.accel.fast._copyable", lambda _m: False)  # the model as given
    plain = explain(model, x, name, target=1, **params).maps
    assert plain.abs().max() > 0
    torch.testing.assert_close(fast, plain, rtol=1e-3, atol=1e-4 * float(plain.abs().max()))


class _Uncopyable(nn.Module):
    """A small CNN holding a lock, which deepcopy cannot copy."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
            nn.Linear(4 * 8 * 8, 3),
        )  # fmt: skip
        self.lock = threading.Lock()

    def forward(self, x):
        return self.net(x)


def test_a_model_that_cannot_be_copied_runs_as_given_and_says_why(caplog):
    torch.manual_seed(0)
    model = with_bn_statistics(_Uncopyable())
    twin = with_bn_statistics(_Uncopyable())
    twin.lock = None  # the same weights, copyable: it runs its fast copy
    twin.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 8, 8)
    with caplog.at_level(logging.DEBUG, logger="cnnlens.accel"):
        got = explain(model, x, "occlusion", target=1, window=2, stride=2).maps
    assert accel.fast_copy(twin, x, "forward") is not None
    assert accel.fast_copy(model, x, "forward") is None
    reference = explain(twin, x, "occlusion", target=1, window=2, stride=2).maps
    assert reference.abs().max() > 0
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("cnnlens.accel")]
    assert any(
        "'forward' fast copy of _Uncopyable" in m and "TypeError" in m and "runs as given" in m
        for m in lines
    ), lines


class _ReadsItsBatchNorm(nn.Module):
    """Reads the BatchNorm's running mean itself: folding replaces the BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        y = self.bn(self.conv(x)) + self.bn.running_mean.view(1, -1, 1, 1)
        return self.head(torch.relu(y).mean((2, 3)))


def test_a_model_folding_cannot_handle_runs_unfolded_and_says_why(caplog):
    torch.manual_seed(0)
    model = with_bn_statistics(_ReadsItsBatchNorm())
    x = torch.randn(3, 3, 8, 8)
    with caplog.at_level(logging.DEBUG, logger="cnnlens.accel"):
        got = accel.forward(model, x)
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)
    copy = _FAST_COPY["forward"][model][1]
    assert isinstance(copy.module.bn, nn.BatchNorm2d)  # unfolded, still channels-last
    assert copy.layout == torch.channels_last
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("cnnlens.accel")]
    assert any("_ReadsItsBatchNorm" in m and "AttributeError" in m for m in lines), lines

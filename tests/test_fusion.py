"""Convolutions fused with the ReLU / residual addition after them (cnnlens.fusion)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlens import batching, explain, nets
from cnnlens.folding import fast_forward_copy
from cnnlens.fusion import FusedConv2d, available, fuse_pointwise
from helpers import with_bn_statistics

pytestmark = [
    pytest.mark.skipif(not available(), reason="this torch build has no oneDNN"),
    pytest.mark.numerics,
]


def _fused(module: nn.Module) -> list[FusedConv2d]:
    return [m for m in module.modules() if isinstance(m, FusedConv2d)]


def _check_same(model: nn.Module, fused: nn.Module, x: torch.Tensor) -> None:
    before = x.clone()
    with torch.no_grad():
        expected = model(x)
        for layout in (torch.contiguous_format, torch.channels_last):
            got = fused(x.contiguous(memory_format=layout))
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(x, before)  # the input is never overwritten


def test_resnet_convolutions_take_their_relu_and_residual():
    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=5))
    x = torch.randn(3, 3, 32, 32)
    folded, _convs, _relus = fast_forward_copy(model, x[:1])
    fused, count = fuse_pointwise(folded, x[:1])
    # stem + 3 blocks x (conv1 -> relu, conv2 + shortcut -> relu)
    assert count == 7 and len(_fused(fused)) == 7
    kinds = sorted(m.extra_repr() for m in _fused(fused))
    # identity shortcuts are overwritten, the padded ones too (nothing reads them after)
    assert kinds == ["add in place, relu"] * 3 + ["relu"] * 4
    assert not any(isinstance(m, (nn.Conv2d, nn.ReLU)) for m in fused.modules())
    _check_same(model, fused, x)


class _TorchvisionBlock(nn.Module):
    """The shape of torchvision's BasicBlock: ``out += identity`` and an in-place ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


def test_torchvision_style_block_after_folding():
    torch.manual_seed(0)
    model = with_bn_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), _TorchvisionBlock(), nn.Flatten()))
    x = torch.randn(2, 3, 9, 9)
    folded, convs, _relus = fast_forward_copy(model, x[:1])
    assert len(convs) == 2
    fused, count = fuse_pointwise(folded, x[:1])
    assert count == 2  # conv1 + relu; conv2 + identity + relu (the first conv has no relu)
    # the identity is the first conv's output, read by conv1 before the add: overwritten
    assert sorted(m.extra_repr() for m in _fused(fused)) == ["add in place, relu", "relu"]
    _check_same(model, fused, x)


class _Residual(nn.Module):
    """``conv(h) + r`` where ``r`` is read again later, is the model's input, is the
    convolution's own input, is added into in place, or is broadcast."""

    def __init__(self, case: str) -> None:
        super().__init__()
        self.case = case
        self.stem = nn.Conv2d(4, 4, 1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        if self.case == "input":
            return F.relu(self.conv(x) + x)
        r = torch.tanh(self.stem(x))
        h = r if self.case == "conv reads r" else torch.sigmoid(r)
        if self.case == "read after":
            return F.relu(self.conv(h) + r) * r
        if self.case == "add into r":
            r += self.conv(h)
            return r * torch.tanh(r)
        if self.case == "add into r, alias read after":  # fx traces `+=` out of place
            alias = r
            r += self.conv(h)
            return r + alias
        if self.case == "add_ into r":
            r.add_(self.conv(h))
            return r * 2
        if self.case == "broadcast":
            return F.relu(self.conv(h) + r.sum(1, keepdim=True))
        return F.relu(self.conv(h) + r)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("plain", ["add in place, relu"]),
        ("read after", ["add, relu"]),
        ("input", ["add, relu"]),
        ("conv reads r", ["add, relu"]),
        ("add into r", ["add in place"]),
        ("add into r, alias read after", []),
        ("add_ into r", []),
        ("broadcast", []),
    ],
)
def test_the_residual_is_overwritten_only_when_nothing_reads_it_later(case, expected):
    torch.manual_seed(0)
    model = _Residual(case).eval()
    x = torch.randn(2, 4, 6, 6)
    fused, count = fuse_pointwise(model, x[:1])
    assert count == len(expected)
    assert [m.extra_repr() for m in _fused(fused)] == expected
    _check_same(model, fused, x)


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = F.relu(self.conv(x))
        if y.mean() > 0:  # data-dependent control flow: fx cannot trace it
            y = y * 2
        return y.flatten(1)


class _OwnConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 0.5


def test_untraceable_and_unusual_convolutions_are_left_as_they_are():
    x = torch.randn(2, 3, 8, 8)
    model = _Branchy().eval()
    assert fuse_pointwise(model, x[:1]) == (model, 0)
    torch.testing.assert_close(batching.forward(model, x), model(x))
    odd = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same"),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
        nn.ReLU(),
        _OwnConv(4, 4, 3),
        nn.ReLU(),
    ).eval()
    assert fuse_pointwise(odd, x[:1]) == (odd, 0)
    shared = nn.Conv2d(3, 3, 3, padding=1)
    twice = nn.Sequential(shared, nn.ReLU(), shared, nn.Flatten()).eval()
    fused, count = fuse_pointwise(twice, x[:1])
    assert count == 1  # the second call has no ReLU after it and keeps the plain conv
    _check_same(twice, fused, x)


def test_only_the_forward_kind_of_fast_copy_is_fused():
    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=5))
    x = torch.randn(4, 3, 32, 32)
    forward_copy = batching.fast_copy(model, x, "forward")
    assert forward_copy.layout == torch.channels_last and len(_fused(forward_copy.module)) == 7
    for kind in ("exact", "folded"):  # these need gradients: no fused kernels
        assert not _fused(batching.fast_copy(model, x, kind).module)
    with torch.no_grad():
        torch.testing.assert_close(batching.forward(model, x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="kind"):
        batching.fast_copy(model, x, "fused")


@pytest.mark.parametrize("name", ["occlusion", "lime", "kernel-shap", "rise", "score-cam"])
def test_forward_only_methods_on_the_fused_copy_equal_the_model(name, monkeypatch):
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
    assert _fused(batching._FAST_COPY["forward"][model][1].module)
    monkeypatch.setattr(batching, "_copyable", lambda _m: False)  # the model as given
    plain = explain(model, x, name, target=1, **params).maps
    assert plain.abs().max() > 0
    torch.testing.assert_close(fast, plain, rtol=1e-3, atol=1e-4 * float(plain.abs().max()))

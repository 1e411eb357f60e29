"""BatchNorm folding (cnnlens.accel.folding) and the fast copies that use it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlens import accel, explain, nets
from cnnlens.accel import fast_copy, fast_forward_copy, fast_model, fold_batchnorm, foldable_pairs
from helpers import with_bn_statistics

pytestmark = pytest.mark.numerics


class _ReadsPreBatchNorm(nn.Module):
    """The convolution's output is read twice: by the BatchNorm and by ``read``."""

    def __init__(self, read) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)
        self.read = read

    def forward(self, x):
        y = self.conv(x)
        return self.head(self.read(self.bn(y), y).mean((2, 3)))


class _SharedConv(nn.Module):
    """One convolution called twice; a BatchNorm reads its second output only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.bn(self.conv(torch.relu(self.conv(x)))).mean((2, 3)))


def test_fold_keeps_logits_and_input_gradient():
    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=5))
    x = torch.randn(4, 3, 32, 32)
    folded, convs = fold_batchnorm(model, x[:1])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert len(convs) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 7
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # user's model intact
    grads, outs = [], []
    for net in (model, folded):
        v = x.clone().requires_grad_(True)
        out = net(v)
        (g,) = torch.autograd.grad(out[:, 2].sum(), v)
        outs.append(out.detach())
        grads.append(g)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "read",
    [
        lambda post, pre: post + pre,  # a residual of the pre-BatchNorm tensor
        lambda post, pre: post * torch.sigmoid(pre),  # a functional gate
        lambda post, pre: post + pre.view(pre.shape).flip(1),  # a view of it
    ],
)
def test_fold_skips_a_convolution_read_by_more_than_its_batchnorm(read):
    torch.manual_seed(0)
    model = with_bn_statistics(_ReadsPreBatchNorm(read))
    x = torch.randn(3, 3, 8, 8)
    assert foldable_pairs(model, x[:1]) == []
    folded, convs = fold_batchnorm(model, x[:1])
    assert convs == frozenset() and isinstance(folded.bn, nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(accel.forward(model, x), model(x), rtol=1e-5, atol=1e-5)


def test_fold_skips_a_shared_convolution_and_batch_statistics():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    assert foldable_pairs(with_bn_statistics(_SharedConv()), x[:1]) == []
    no_stats = nn.Sequential(
        nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3, track_running_stats=False), nn.Flatten()
    ).eval()
    assert foldable_pairs(no_stats, x[:1]) == []
    plain = with_bn_statistics(
        nn.Sequential(nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten())
    )
    assert foldable_pairs(plain, x[:1]) == [("0", "1")]


def test_fast_copy_is_folded_only_when_asked():
    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=5))
    x = torch.randn(4, 3, 32, 32)
    fast = fast_copy(model, x, "folded")
    assert fast is not None and fast.layout == torch.channels_last
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.module.modules())
    assert fast_model(model, x, "folded")[0] is fast.module
    plain = fast_copy(model, x)  # for gradients: BatchNorm kept
    assert plain is not None and plain.module is not fast.module
    assert isinstance(plain.module.bn1, nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(accel.forward(model, x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", ["conv1", "bn1", "layer2"])
def test_grad_cam_at_a_folded_layer_equals_the_model(layer, monkeypatch):
    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=5))
    x = torch.randn(3, 3, 32, 32)
    fast = explain(model, x, "grad-cam", layer=layer, target=1).maps
    monkeypatch.setattr("cnnlens.accel.fast._copyable", lambda _m: False)  # the model as given
    plain = explain(model, x, "grad-cam", layer=layer, target=1).maps
    assert plain.abs().max() > 0
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5 * float(plain.abs().max()))


class _Gated(nn.Module):
    """ReLUs whose input is read elsewhere, is a view, is the model's input, or is
    a sigmoid's output (which autograd keeps for the sigmoid's backward)."""

    def __init__(self, case: str) -> None:
        super().__init__()
        self.case = case
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        if self.case == "input":
            x = self.relu(x)
        y = self.conv(x)
        if self.case == "read twice":
            y = self.relu(y) + y
        elif self.case == "view":
            y = self.relu(y.view(y.shape)) * 2
        elif self.case == "sigmoid":
            y = self.relu(torch.sigmoid(y))
        else:
            y = self.relu(y)
        return self.head(y.mean((2, 3)))


@pytest.mark.parametrize("case", ["plain", "read twice", "view", "input", "sigmoid"])
def test_relus_go_in_place_only_where_nothing_else_reads_their_input(case):
    torch.manual_seed(0)
    model = _Gated(case).eval()
    x = torch.randn(3, 3, 8, 8)
    before = x.clone()
    _copy, _folded, in_place = fast_forward_copy(model, x[:1])
    assert bool(in_place) is (case in ("plain", "sigmoid"))
    fast = fast_copy(model, x, "folded")
    assert fast.module.relu.inplace is (case == "plain")  # autograd refuses the sigmoid's
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(accel.forward(model, x), expected, rtol=1e-5, atol=1e-6)
    grads = []
    for run in (model, accel.fast_runner(model, x, "folded")):
        v = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(run(v)[:, 1].sum(), v)
        grads.append(g)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
    assert torch.equal(x, before) and not model.relu.inplace


def test_fast_copy_of_resnet_runs_its_relus_in_place():
    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet8", num_classes=5))
    x = torch.randn(2, 3, 32, 32)
    relus = [m for m in fast_copy(model, x, "folded").module.modules() if type(m) is nn.ReLU]
    assert len(relus) == 7 and all(r.inplace for r in relus)
    assert not any(m.inplace for m in model.modules() if type(m) is nn.ReLU)

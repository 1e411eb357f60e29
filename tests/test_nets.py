"""cnnlens.nets: the architecture contract and the activation checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlens import nets
from cnnlens.errors import ConfigError, LayerError
from cnnlens.nets.checks import activation_report, require_distinct_activations

# the VAE (a generator) has no head; the ImageNet families keep torchvision's
# layout instead of the contract (tests/test_nets_imagenet.py)
ALL = list(nets.names("classifier", layout="cnnlens"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Single-image forwards are fastest on one thread (no spinning on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_names_lists_every_architecture():
    expected = {f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)}
    expected |= {f"vgg{d}" for d in (11, 13, 16, 19)} | {"lenet5"}
    assert expected <= set(ALL)
    assert all(isinstance(d, str) and d and "\n" not in d for d in nets.names().values())


@pytest.mark.parametrize("name", ALL)
def test_contract(name):
    torch.manual_seed(0)
    model = nets.create(name, num_classes=7).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
    assert logits.shape == (1, 7)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 7
    assert feats.shape == (1, model.head.in_features)
    assert (feats >= 0).all()
    torch.testing.assert_close(model.head(feats), logits)
    assert model.arch["name"] == name
    assert model.arch["kwargs"]["num_classes"] == 7
    assert model.arch["kwargs"]["in_channels"] == 3
    assert activation_report(model, x) == []  # distinct, non-in-place activation modules


def test_resnet_structure_and_arch_kwargs():
    model = nets.create("resnet20", width=2, shortcut="B")
    assert model.arch == {
        "name": "resnet20",
        "kwargs": {"num_classes": 10, "in_channels": 3, "width": 2, "shortcut": "B"},
    }
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    block = model.layer2[0]
    for part in ("conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "shortcut"):
        assert hasattr(block, part)
    assert isinstance(block.shortcut[0], nn.Conv2d) and block.shortcut[0].kernel_size == (1, 1)
    assert model.head.in_features == 128
    assert isinstance(model.layer1[0].shortcut, nn.Identity)


@pytest.mark.parametrize("depth", [8, 14, 20, 32, 44, 56, 110])
def test_resnet_depth_counts_weighted_layers(depth):
    model = nets.create(f"resnet{depth}")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == depth  # 6n+1 convs plus the head; option A adds no conv
    model_b = nets.create(f"resnet{depth}", shortcut="B")
    assert sum(isinstance(m, nn.Conv2d) for m in model_b.modules()) == depth - 1 + 2


def test_resnet20_parameter_count():
    # He et al. 2016, Table 6: 0.27M parameters for ResNet-20 (option A)
    model = nets.create("resnet20")
    assert sum(p.numel() for p in model.parameters()) == 269_722


def test_shortcut_a_pads_with_zeros():
    block = nets.create("resnet8").layer2[0]
    x = torch.randn(1, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (1, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_vgg_has_features_and_single_head():
    model = nets.create("vgg16", num_classes=100)
    assert isinstance(model.features, nn.Sequential)
    assert sum(isinstance(m, nn.Conv2d) for m in model.features) == 13
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 13
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [model.head] and model.head.in_features == 512


@pytest.mark.parametrize("channels", [1, 3])
def test_lenet_channels(channels):
    model = nets.create("lenet5", in_channels=channels).eval()
    assert model(torch.randn(1, channels, 32, 32)).shape == (1, 10)
    assert model.forward_features(torch.randn(1, channels, 32, 32)).shape == (1, 84)


def test_create_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="resnet20"):
        nets.create("resnet2O")
    with pytest.raises(ConfigError, match="shortcut"):
        nets.create("resnet20", shortcut="C")
    with pytest.raises(ConfigError, match="width"):
        nets.create("resnet20", width=0)
    with pytest.raises(ConfigError, match="bad arguments"):
        nets.create("vgg16", width=2)
    with pytest.raises(ConfigError, match="num_classes"):
        nets.create("lenet5", num_classes=0)


def test_layouts_split_the_registry():
    imagenet = {"resnet18", "resnet50", "vgg16_bn", "mobilenet_v2", "efficientnet_b0"}
    imagenet |= {"densenet121", "convnext_tiny"}
    assert set(nets.names(layout="torchvision")) == imagenet
    assert not imagenet & set(ALL) and "resnet20" in ALL
    assert nets.layout_of("resnet20") == "cnnlens" and nets.layout_of("resnet50") == "torchvision"
    with pytest.raises(ConfigError, match="layout"):
        nets.register("x", "y", layout="timm")


def test_create_defaults_to_the_constructors_num_classes():
    assert nets.create("lenet5").arch["kwargs"]["num_classes"] == 10
    assert nets.create("mobilenet_v2").classifier[-1].out_features == 1000
    assert nets.create("mobilenet_v2", num_classes=10).arch["kwargs"]["num_classes"] == 10
    with pytest.raises(ConfigError, match="in_channels"):
        nets.create("mobilenet_v2", in_channels=0)

    def no_defaults(*, num_classes: int, in_channels: int) -> nn.Module:
        return nn.Linear(in_channels, num_classes)

    nets.register("no-defaults-test-net", "required keywords")(no_defaults)
    try:  # a constructor without defaults gets 10 classes and 3 channels, as before
        assert nets.create("no-defaults-test-net").weight.shape == (10, 3)
    finally:
        nets._REGISTRY.pop("no-defaults-test-net", None)


def test_register_adds_an_architecture():
    @nets.register("tiny-test-net", "a two-layer test net")
    def tiny(*, num_classes: int = 10, in_channels: int = 3, hidden: int = 4) -> nn.Module:
        class Tiny(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(in_channels, hidden, 3)
                self.relu = nn.ReLU()
                self.pool = nn.AdaptiveAvgPool2d(1)
                self.head = nn.Linear(hidden, num_classes)

            def forward_features(self, x):
                return self.pool(self.relu(self.conv(x))).flatten(1)

            def forward(self, x):
                return self.head(self.forward_features(x))

        return Tiny()

    try:
        assert nets.names()["tiny-test-net"] == "a two-layer test net"
        model = nets.create("tiny-test-net", num_classes=3, hidden=5)
        assert model.arch["kwargs"] == {"num_classes": 3, "in_channels": 3, "hidden": 5}
        with pytest.raises(ConfigError, match="already registered"):
            nets.register("tiny-test-net", "again")(lambda num_classes, in_channels: None)
    finally:
        nets._REGISTRY.pop("tiny-test-net", None)


class _Bad(nn.Module):
    """A user model with every activation mistake the checks must catch."""

    def __init__(self, mistake: str):
        super().__init__()
        self.mistake = mistake
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=mistake == "inplace")
        self.act2 = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.act(self.conv1(x))
        x = self.conv2(x)
        if self.mistake == "reused":
            x = self.act(x)
        elif self.mistake == "functional":
            x = F.relu(x)
        elif self.mistake == "tensor-method":
            x = x.relu_()
        else:
            x = self.act2(x)
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize(
    "mistake,kind,where,text",
    [
        ("reused", "reused", "act", "runs 2 times"),
        ("inplace", "inplace", "act", "inplace=True"),
        ("functional", "functional", "", "functional relu"),
    ],
)
def test_report_finds_each_mistake(mistake, kind, where, text):
    model = _Bad(mistake).train()
    findings = activation_report(model)
    assert [(f.kind, f.module) for f in findings] == [(kind, where)]
    assert model.training  # mode restored
    assert not model._forward_hooks and not model.act._forward_pre_hooks  # hooks removed
    with pytest.raises(LayerError, match=text):
        require_distinct_activations(model)


def test_report_finds_in_place_tensor_method_in_a_submodule():
    outer = nn.Sequential(_Bad("tensor-method"))
    (finding,) = activation_report(outer, torch.randn(3, 3, 16, 16))
    assert finding.kind == "functional" and finding.module == "0"
    assert "in-place relu_" in finding.message and "_Bad" in finding.message


def test_require_lists_all_problems():
    class Worse(_Bad):
        def forward(self, x):
            x = self.act(self.conv1(x))
            x = torch.sigmoid(self.act(self.conv2(x)))
            return self.head(x.mean((2, 3)))

    with pytest.raises(LayerError) as info:
        require_distinct_activations(Worse("inplace"))
    message = str(info.value)
    assert "3 activation problem(s)" in message
    assert "runs 2 times" in message and "inplace=True" in message and "sigmoid" in message

"""cnnlens.load: every kind of saved model through its package's loader, a user's own
module with a weights file and a model card, and every way a spec can be wrong."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

import cnnlens
from cnnlens import checkpoint, nets
from cnnlens.errors import CheckpointError, InputError
from cnnlens.loading import ModelCard, loaders
from helpers import with_bn_statistics


def _same_outputs(a, b, x):
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)


# --- saved models of every kind ------------------------------------------------------------


def test_every_package_registers_its_loader():
    from cnnlens.studies.channel_roles.loaders import ARCH_NAMES
    from cnnlens.studies.channel_roles.training import KINDS

    assert set(loaders()) == {
        "attribute-network", "decomposed", "drib-gated", "pruned", "vae", "classifier"
    }  # fmt: skip
    # the claim names what training saves, except a cnnlens.nets architecture (the
    # ResNet-18 multi-label head), which the classifier loader opens
    assert set(ARCH_NAMES) == set(KINDS.values()) - set(nets.names())


def test_a_classifier_opens_from_its_folder_and_its_run_folder(tmp_path):
    torch.manual_seed(0)
    net = with_bn_statistics(nets.create("resnet8", num_classes=3))
    checkpoint.save(
        net, tmp_path / "run" / "model", classes=list("abc"), input_shape=(3, 32, 32),
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
    )  # fmt: skip
    x = torch.randn(2, 3, 32, 32)
    for path in (tmp_path / "run", tmp_path / "run" / "model", str(tmp_path / "run")):
        model, card = cnnlens.load(path, with_card=True)
        _same_outputs(model, net, x)
        assert not model.training
        assert card == ModelCard(
            ("a", "b", "c"), (3, 32, 32), (0.5,) * 3, (0.25,) * 3, str(path), "classifier"
        )
    assert cnnlens.load(tmp_path / "run").meta["classes"] == ["a", "b", "c"]


def test_a_gated_model_round_trips(tmp_path):
    from cnnlens.studies.drib import gate, gated_layers, save_gated

    torch.manual_seed(0)
    gated = gate(with_bn_statistics(nets.create("vgg11", num_classes=5)), masks=2).eval()
    g = torch.Generator().manual_seed(1)
    for layer in gated_layers(gated).values():  # masks with exact zeros, as after training
        layer.masks.data = torch.rand(layer.masks.shape, generator=g) * 2 - 0.6
        layer.project()
    data = (torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,)))
    save_gated(gated, tmp_path / "g" / "model", data=data)
    model, card = cnnlens.load(tmp_path / "g", with_card=True)
    assert card.kind == "drib-gated" and model.drib == gated.drib
    _same_outputs(model, gated, data[0])


def test_a_pruned_model_round_trips(tmp_path):
    from cnnlens.studies.drib.baselines import prune_copy
    from cnnlens.studies.drib.pruned_models import save_pruned

    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("vgg11", num_classes=4))
    pruned = prune_copy(
        model, torch.randn(1, 3, 32, 32), method="l1", ratio=0.3, ignored=["head"]
    ).eval()
    save_pruned(pruned, tmp_path / "p", classes=list("abcd"), input_shape=(3, 32, 32))
    loaded, card = cnnlens.load(tmp_path / "p", with_card=True)
    assert card.kind == "pruned" and card.classes == tuple("abcd")
    widths = [m.out_channels for m in loaded.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(widths) < sum(
        m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)
    )
    _same_outputs(loaded, pruned, torch.randn(3, 3, 32, 32))


def test_a_decomposed_model_round_trips(tmp_path):
    from cnnlens.layers import set_layer
    from cnnlens.studies.decompose.decomposed import DecomposedHead, save_decomposed

    torch.manual_seed(0)
    net = with_bn_statistics(nets.create("resnet8", num_classes=3))
    g = torch.Generator().manual_seed(2)
    head = DecomposedHead(
        torch.randint(0, 64, (3, 5), generator=g), torch.randn(3, 5, generator=g),
        torch.randn(3, generator=g), in_features=64,
    )  # fmt: skip
    set_layer(net, "head", head)
    save_decomposed(net, tmp_path / "d", "head", classes=list("xyz"), input_shape=(3, 32, 32))
    loaded, card = cnnlens.load(tmp_path / "d", with_card=True)
    assert card.kind == "decomposed" and isinstance(loaded.head, DecomposedHead)
    _same_outputs(loaded, net.eval(), torch.randn(2, 3, 32, 32))


def test_an_attribute_network_round_trips(tmp_path):
    from cnnlens.studies.channel_roles.training import build_network, save_attribute_network

    data = cnnlens.data.load("shapes", split="test", size=16, n=16)
    torch.manual_seed(0)
    net = with_bn_statistics(build_network(data, channels=(4, 6, 6, 8)))
    save_attribute_network(net, tmp_path / "a" / "model", data)
    loaded, card = cnnlens.load(tmp_path / "a", with_card=True)
    assert card.kind == "attribute-network"
    assert card.classes == tuple(data.attribute_names)
    _same_outputs(loaded, net, data.tensors(range(4))[0])


def test_a_vae_round_trips(tmp_path):
    from cnnlens.studies.relabel import train_vae
    from cnnlens.train import OptimizerConfig, TrainConfig

    torch.manual_seed(0)
    x, y = torch.rand(32, 1, 16, 16), torch.zeros(32, dtype=torch.long)
    config = TrainConfig(
        epochs=1, batch_size=16, optimizer=OptimizerConfig(name="adam", lr=1e-3), augment=()
    )
    vae = train_vae((x, y), out=tmp_path / "vae", latent=4, width=4, config=config).vae.eval()
    loaded, card = cnnlens.load(tmp_path / "vae", with_card=True)
    assert card.kind == "vae" and card.input_shape == (1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x[:4]), vae.encode(x[:4]))


def test_a_saved_model_refuses_module_arguments(tmp_path):
    checkpoint.save(nets.create("lenet5", num_classes=2), tmp_path / "m")
    with pytest.raises(InputError, match="drop weights, classes"):
        cnnlens.load(tmp_path / "m", weights=tmp_path / "w.pth", classes=["a", "b"])


def test_a_folder_without_a_model_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no saved model in .*model.json"):
        cnnlens.load(tmp_path)
    with pytest.raises(CheckpointError, match="no saved model in .*nowhere"):
        cnnlens.load(tmp_path / "nowhere")


# --- a user's own module ------------------------------------------------------------------

MYMODELS = '''
"""A torchvision-style ResNet, as a user writes it."""
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class TinyResNet(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = Block(8, 8, 1)
        self.layer2 = Block(8, 16, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build():
    return TinyResNet(4)


def build_five():
    return TinyResNet(5)


class Maps(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def maps():
    return Maps()


def pair():
    class Pair(TinyResNet):
        def forward(self, x):
            return super().forward(x), x
    return Pair()


NOT_CALLABLE = 3
'''


@pytest.fixture
def user(tmp_path, monkeypatch):
    """``mymodels.py`` in a working directory with a trained-looking net's weights saved
    three ways, as a user has them; returns the folder and the reference net."""
    (tmp_path / "mymodels.py").write_text(textwrap.dedent(MYMODELS))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)
    spec = importlib.util.spec_from_file_location("_reference_mymodels", tmp_path / "mymodels.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    torch.manual_seed(0)
    net = with_bn_statistics(reference.build())
    state = net.state_dict()
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"state_dict": state, "epoch": 7}, tmp_path / "nested.pt")
    torch.save({"model_state_dict": state, "lr": 0.1}, tmp_path / "ckpt.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    yield tmp_path, net
    sys.modules.pop("mymodels", None)


def test_a_user_module_loads_from_each_weights_file(user):
    folder, net = user
    x = torch.randn(2, 3, 32, 32)
    for weights in ("plain.pth", "nested.pt", "ckpt.pt", "w.safetensors"):
        model, card = cnnlens.load(
            "mymodels:build", weights=folder / weights, input_shape=(3, 32, 32), with_card=True
        )
        _same_outputs(model, net, x)
        assert not model.training and card.kind == "module"
        assert card.classes == ("0", "1", "2", "3")  # the default: one per logit
        assert model.meta["input_shape"] == [3, 32, 32]


def test_the_card_comes_from_arguments_or_a_model_yaml(user):
    folder, net = user
    (folder / "classes.txt").write_text("cat\ndog\n\nbird\nfish\n")
    (folder / "model.yaml").write_text(
        "model: mymodels:build\nweights: plain.pth\nclasses: classes.txt\n"
        "input_shape: 3,32,32\nmean: [0.5, 0.4, 0.3]\nstd: [0.2, 0.2, 0.2]\n"
    )
    expected = ModelCard(
        ("cat", "dog", "bird", "fish"), (3, 32, 32), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), "", "module"
    )
    x = torch.randn(2, 3, 32, 32)
    for spec, kwargs in (
        (folder / "model.yaml", {}),
        (folder, {}),  # a folder holding model.yaml
        (folder / "plain.pth", {}),  # a weights file with model.yaml beside it
        ("mymodels:build", {"weights": folder / "nested.pt"}),  # the yaml fills the card
    ):
        model, card = cnnlens.load(spec, **kwargs, with_card=True)
        _same_outputs(model, net, x)
        assert dataclasses.replace(card, source="") == expected, spec
    # arguments win over the yaml; a classes file is read from the current directory
    (folder / "other.txt").write_text("a\nb\nc\nd\n")
    _, card = cnnlens.load(folder, classes="other.txt", input_shape="3,40,40", with_card=True)
    assert card.classes == tuple("abcd") and card.input_shape == (3, 40, 40)
    assert card.mean == (0.5, 0.4, 0.3)


def test_one_number_of_mean_or_std_serves_every_channel(user):
    """``std: 0.25`` in a ``model.yaml`` (or ``job.yaml``: a YAML number, not a text) means
    every channel, as ``--std 0.25`` does; a boolean is no number."""
    from cnnlens.errors import InputError
    from cnnlens.loading.spec import ModelSpec, card_data

    folder, _ = user
    (folder / "model.yaml").write_text(
        "model: mymodels:build\nweights: plain.pth\ninput_shape: 3,32,32\nmean: 0\nstd: 0.25\n"
    )
    model, card = cnnlens.load(folder, with_card=True)
    assert card.mean == (0.0,) and card.std == (0.25,)  # as --mean 0 --std 0.25 give it
    data = card_data("shapes", "test", model, n=2)  # the data read as the card says
    assert tuple(data.mean) == (0.0,) * 3 and tuple(data.std) == (0.25,) * 3
    spec = ModelSpec.from_fields("mymodels:build", {"mean": 0.5, "std": 0.25, "input": "3,32,32"})
    assert (spec.mean, spec.std) == ((0.5,), (0.25,))
    assert spec.mean == ModelSpec.from_fields("mymodels:build", {"mean": "0.5"}).mean
    with pytest.raises(InputError, match="std"):
        ModelSpec.from_fields("mymodels:build", {"std": True})


def test_a_cnnlens_nets_name_takes_torchvision_layout_weights(tmp_path):
    torch.manual_seed(0)
    net = with_bn_statistics(nets.create("resnet18", num_classes=3))
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    model, card = cnnlens.load(
        "resnet18", weights=tmp_path / "r18.pth", classes=["a", "b", "c"], with_card=True
    )
    assert card.input_shape == (3, 224, 224) and card.kind == "nets"
    _same_outputs(model, net, torch.randn(1, 3, 64, 64))


# --- errors ---------------------------------------------------------------------------------


def test_weights_that_do_not_fit_name_the_keys(user):
    folder, net = user
    state = net.state_dict()
    state.pop("fc.bias")
    state["head.weight"] = torch.zeros(4, 16)
    torch.save(state, folder / "keys.pth")
    with pytest.raises(CheckpointError) as err:
        cnnlens.load("mymodels:build", weights=folder / "keys.pth")
    assert "missing keys: 'fc.bias' (1)" in str(err.value)
    assert "unexpected keys: 'head.weight' (1)" in str(err.value)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*fc.weight \(4, 16\) vs \(5, 16\)"):
        cnnlens.load("mymodels:build_five", weights=folder / "plain.pth")


def test_a_model_that_does_not_return_logits_is_refused_before_any_work(user):
    folder, _ = user
    with pytest.raises(InputError, match=r"returns shape \[1, 4, 32, 32\].*logits \[N, K\]"):
        cnnlens.load("mymodels:maps", input_shape=(3, 32, 32))
    with pytest.raises(InputError, match="returns a tuple"):
        cnnlens.load("mymodels:pair", input_shape=(3, 32, 32))
    with pytest.raises(InputError, match="fails on a 1x32x32 input"):
        cnnlens.load("mymodels:build", input_shape=(1, 32, 32))
    with pytest.raises(InputError, match="3 class names are given but .* outputs 4 logits"):
        cnnlens.load("mymodels:build", classes=["a", "b", "c"], input_shape=(3, 32, 32))
    with pytest.raises(InputError, match="mean has 2 values for 3-channel input"):
        cnnlens.load("mymodels:build", input_shape=(3, 32, 32), mean=[0.5, 0.5])
    with pytest.raises(InputError, match="input_shape must be three positive ints"):
        cnnlens.load("mymodels:build", input_shape="3,32")


def test_a_missing_module_or_attribute_is_named(user):
    with pytest.raises(InputError, match="no module named 'nosuchpackage'.*importable from here"):
        cnnlens.load("nosuchpackage.models:build")
    with pytest.raises(InputError, match="module 'mymodels' has no attribute 'nope'"):
        cnnlens.load("mymodels:nope")
    with pytest.raises(InputError, match="'NOT_CALLABLE' is a int, not a callable"):
        cnnlens.load("mymodels:NOT_CALLABLE")
    with pytest.raises(InputError, match="not a model spec"):
        cnnlens.load("no-such-thing")


def test_a_weights_file_alone_or_a_bad_yaml_is_refused(user):
    folder, _ = user
    with pytest.raises(InputError, match="holds weights but not the model"):
        cnnlens.load(folder / "plain.pth")
    (folder / "model.yaml").write_text("model: mymodels:build\nlayers: 3\n")
    with pytest.raises(InputError, match="unknown fields layers"):
        cnnlens.load(folder / "model.yaml")
    with pytest.raises(InputError, match="classes file .*missing.txt does not exist"):
        cnnlens.load("mymodels:build", classes="missing.txt")


@pytest.mark.parametrize("zoo", ["torchvision", "timm"])
def test_model_zoos_load_when_they_import_else_one_line(zoo):
    if importlib.util.find_spec(zoo) is None:
        with pytest.raises(InputError, match=f"{zoo} does not import here") as err:
            cnnlens.load(f"{zoo}:resnet18")
        assert "\n" not in str(err.value)
    else:
        model, card = cnnlens.load(f"{zoo}:resnet18", with_card=True)
        assert len(card.classes) == 1000 and card.kind == zoo


def test_an_unusable_device_is_refused(tmp_path):
    checkpoint.save(nets.create("lenet5", num_classes=2), tmp_path / "m")
    with pytest.raises(InputError, match="device 'nonsense' is not usable here"):
        cnnlens.load(tmp_path / "m", device="nonsense")


class _Payload:
    """Unpickling this would create the marker file: ``open(marker, "w")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_payload_is_refused_without_running_it(user):
    folder, net = user
    marker = folder / "pwned"
    torch.save({"state_dict": net.state_dict(), "hook": _Payload(marker)}, folder / "evil.pth")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused to load .*evil.pth.*never unpickles"):
        cnnlens.load("mymodels:build", weights=folder / "evil.pth")
    assert not marker.exists()
    torch.load(folder / "evil.pth", weights_only=False)  # the payload is live: a full unpickle
    assert marker.exists()  # runs it

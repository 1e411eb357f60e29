"""cnnlens.nets ImageNet families: torchvision's state_dict layout, sizes and outputs.

The references in ``tests/data/torchvision/<name>.json.gz`` were written once
from torchvision 0.28.0's own model code (the wheel's pure-Python model files
run with its compiled extension stubbed out; see the file's ``source``
field): every ``state_dict`` key with its shape, in order, and the float64
logits of that torchvision model at 10 classes, with the weights of
:func:`seeded_state` on the input of :func:`seeded_input`. torchvision itself
is not needed (nor importable) here.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlens import nets
from cnnlens.checkpoint import load_state_dict_file
from cnnlens.cost import macs
from cnnlens.errors import CheckpointError
from cnnlens.nets.checks import activation_report

DATA = Path(__file__).parent / "data" / "torchvision"

# torchvision's published figures: parameters at 1000 classes, and GFLOPS
# (multiply-accumulates, at 224 px) as its weights' metadata gives them
PUBLISHED = {
    "resnet18": (11_689_512, 1.814),
    "resnet50": (25_557_032, 4.089),
    "vgg16_bn": (138_365_992, 15.47),
    "mobilenet_v2": (3_504_872, 0.301),
    "efficientnet_b0": (5_288_548, 0.386),
    "densenet121": (7_978_856, 2.834),
    "convnext_tiny": (28_589_128, 4.456),
}
FAMILIES = list(PUBLISHED)


def reference(name: str) -> dict:
    with gzip.open(DATA / f"{name}.json.gz", "rt", encoding="utf-8") as fh:
        return json.load(fh)


def on_meta(name: str, **kwargs) -> nn.Module:
    """The model with shapes but no storage: enough for keys, sizes and MAC counting."""
    with torch.device("meta"):
        return nets.create(name, **kwargs)


def seeded_state(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Float64 weights drawn from ``seed`` and the keys and shapes alone.

    Keys in sorted order from one generator: matrices and kernels
    ``N(0, 1/fan_in)``, norm scales and running variances ``U(0.5, 1.5)``,
    other vectors ``N(0, 0.1^2)``; batch counters 0. Any layout difference
    (a stride, a missing activation, a shortcut) changes the logits by O(1).
    """
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.long)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=gen, dtype=torch.float64) / fan_in**0.5
        elif key.endswith(("running_var", "weight")):
            state[key] = torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5
        else:
            state[key] = 0.1 * torch.randn(shape, generator=gen, dtype=torch.float64)
    return state


def seeded_input(seed: int = 1) -> torch.Tensor:
    """Two float64 64x64 RGB images from ``seed``."""
    return torch.randn(
        2, 3, 64, 64, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_state_dict_keys_and_shapes_are_torchvisions(name):
    ref = reference(name)
    ours = [[k, list(v.shape)] for k, v in on_meta(name).state_dict().items()]
    assert ours == ref["keys"]  # same keys, same shapes, same order
    assert nets.layout_of(name) == "torchvision" and name in nets.names("classifier")


@pytest.mark.parametrize("name", FAMILIES)
def test_parameter_count_is_torchvisions(name):
    model = on_meta(name)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[name][0]
    assert model.arch["kwargs"]["num_classes"] == 1000  # the ImageNet default


@pytest.mark.parametrize("name", FAMILIES)
def test_macs_at_224_match_published(name):
    total = macs(on_meta(name), (3, 224, 224)).total / 1e9
    assert total == pytest.approx(PUBLISHED[name][1], rel=1e-3)


@pytest.mark.numerics
@pytest.mark.parametrize("name", FAMILIES)
def test_logits_equal_torchvisions_on_the_same_weights(name):
    """Same weights, same input: our forward gives torchvision's logits (10 classes, 64 px)."""
    ref = reference(name)
    model = on_meta(name, num_classes=10)  # no init: every tensor comes from the state below
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) for k, v in seeded_state({k: own[k].shape for k in own}).items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    assert not any(t.is_meta for t in model.state_dict().values())
    with torch.no_grad():
        logits = model(seeded_input().float()).double()
        features = model.forward_features(seeded_input().float())
    expected = torch.tensor(ref["logits_64px_10_classes"], dtype=torch.float64)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    # float32 against float64 differs by ~5e-7 of the largest logit; the tanh
    # approximation of GELU in ConvNeXt alone moves it by 2e-4
    scale = expected.abs().max().item()
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=2e-5 * scale)
    torch.testing.assert_close(model.head(features).double(), logits)
    assert model.head is [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@pytest.mark.parametrize("name", ["resnet50", "efficientnet_b0", "convnext_tiny"])
def test_training_forward_and_small_inputs(name):
    """Stochastic depth and dropout are active in training; 32 px inputs still give [N, K]."""
    torch.manual_seed(0)
    model = nets.create(name, num_classes=3)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121"])
def test_a_saved_torchvision_style_file_loads_strictly(tmp_path, name):
    """A ``torch.save``'d state dict with torchvision's keys goes through cnnlens's loader."""
    source = nets.create(name)
    path = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    target = nets.create(name)
    load_state_dict_file(target, path)
    for (key, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), key
    torch.save({"state_dict": {**source.state_dict(), "extra.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="unexpected keys: 'extra.weight'"):
        load_state_dict_file(target, path)


def test_in_channels_changes_only_the_stem():
    for name in FAMILIES:
        gray = on_meta(name, in_channels=1).state_dict()
        rgb = on_meta(name).state_dict()
        changed = [k for k in rgb if gray[k].shape != rgb[k].shape]
        assert len(changed) == 1 and gray[changed[0]].shape[1] == 1, name


TORCHVISION_CONSTRUCTS = {
    "resnet18": {"reused", "inplace"},  # one relu module per block, applied 2 (3) times
    "resnet50": {"reused", "inplace"},
    "vgg16_bn": {"inplace"},
    "mobilenet_v2": {"inplace"},  # ReLU6(inplace=True)
    "efficientnet_b0": {"inplace"},  # SiLU(inplace=True), also inside squeeze-excitation
    "densenet121": {"inplace", "functional"},  # the final F.relu(inplace=True)
    "convnext_tiny": set(),  # one GELU module per block, not in place
}


@pytest.mark.parametrize("name", FAMILIES)
def test_activation_constructs_are_torchvisions(name):
    """The activation report sees exactly the constructs torchvision's models have."""
    findings = activation_report(on_meta(name))
    assert {f.kind for f in findings} == TORCHVISION_CONSTRUCTS[name]


def test_cnnlens_save_and_load_rebuild_the_family(tmp_path):
    from cnnlens import checkpoint

    model = nets.create("efficientnet_b0", num_classes=4, stochastic_depth_prob=0.1)
    checkpoint.save(model, tmp_path / "m")
    loaded = checkpoint.load(tmp_path / "m")
    assert loaded.arch == model.arch and not loaded.training
    assert loaded.features[3][1].stochastic_depth.p == model.features[3][1].stochastic_depth.p > 0
    for (key, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), key

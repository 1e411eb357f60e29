"""User models the methods must get right or refuse with a reason.

One small residual net written five ways with identical weights: the
reference (distinct ReLU modules, ``nn.Identity`` shortcut, ``nn.Flatten``),
in-place ReLUs, one ReLU module reused at every place, ``F.relu`` in the
forward, and a forward that relies on an in-place side effect. Each method
must give the reference's map, or raise a :class:`CnnlensError` that says
why — never a different map.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlens.attribution import explain
from cnnlens.errors import CnnlensError, LayerError
from cnnlens.hooks import model_fingerprint, same_fingerprint

METHODS = {
    "saliency": {},
    "input-x-gradient": {},
    "integrated-gradients": {"steps": 4},
    "smoothgrad": {"samples": 2},
    "guided-backprop": {},
    "deconvnet": {},
    "deeplift": {},
    "lrp": {},
    "cam": {"layer": "block"},
    "grad-cam": {"layer": "block"},
    "grad-cam++": {"layer": "block"},
    "score-cam": {"layer": "block"},
    "guided-grad-cam": {"layer": "block"},
    "layer-cam": {"layer": "block"},
}
# Methods whose rule lives in the activation modules' backward.
MODULE_RULES = {"guided-backprop", "deconvnet", "guided-grad-cam"}
# Methods that give every activation its rule by the function it calls (functional ones too).
FUNCTION_RULES = {"deeplift"}


class Block(nn.Module):
    def __init__(self, act1, act2, mode: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.shortcut = nn.Identity()
        self.act1, self.act2, self.mode = act1, act2, mode

    def forward(self, x):
        relu = (lambda t: F.relu(t)) if self.mode == "functional" else None
        out = self.bn1(self.conv1(x))
        out = relu(out) if relu else self.act1(out)
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        if self.mode == "side-effect":
            self.act2(out)  # relies on in-place modification
            return out
        return relu(out) if relu else self.act2(out)


class UserNet(nn.Module):
    def __init__(self, mode: str = "distinct") -> None:
        super().__init__()
        inplace = mode in ("inplace", "side-effect")
        if mode == "reused":
            shared = nn.ReLU()
            acts = [shared] * 3
            self.relu = shared
        else:
            acts = [nn.ReLU(inplace=inplace) for _ in range(3)]
            self.relu = acts[0]
        self.mode = mode
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.block = Block(acts[1], acts[2], mode)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.conv(x)
        x = F.relu(x) if self.mode == "functional" else self.relu(x)
        return self.fc(self.flatten(self.pool(self.block(x))))


@pytest.fixture(scope="module")
def nets_and_input():
    torch.manual_seed(0)
    reference = UserNet("distinct")
    gen = torch.Generator().manual_seed(1)
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
    reference.eval()
    variants = {}
    for mode in ("inplace", "reused", "functional", "side-effect"):
        net = UserNet(mode)
        net.load_state_dict(reference.state_dict())
        variants[mode] = net.eval()
    return reference, variants, torch.randn(2, 3, 12, 12, generator=gen)


@pytest.mark.parametrize("name", list(METHODS))
def test_variants_match_reference_or_refuse(nets_and_input, name):
    reference, variants, x = nets_and_input
    kw = METHODS[name]
    expected = explain(reference, x, name, target=1, **kw)
    for mode in ("inplace", "reused", "functional"):
        model = variants[mode]
        before = model_fingerprint(model)
        if mode == "functional" and name in MODULE_RULES:
            with pytest.raises(LayerError, match="functional relu"):
                explain(model, x, name, target=1, **kw)
        else:
            got = explain(model, x, name, target=1, **kw)
            scale = float(expected.maps.abs().max())
            assert torch.allclose(got.maps, expected.maps, atol=1e-5 * scale), (name, mode)
        assert same_fingerprint(before, model_fingerprint(model))


@pytest.mark.parametrize("name", sorted(MODULE_RULES | FUNCTION_RULES))
def test_side_effect_forward_is_refused(nets_and_input, name):
    """A forward relying on in-place mutation would change under the rule: refuse."""
    _reference, variants, x = nets_and_input
    model = variants["side-effect"]
    before = model_fingerprint(model)
    with pytest.raises(CnnlensError, match="in-place"):
        explain(model, x, name, target=1)
    assert same_fingerprint(before, model_fingerprint(model))


def test_lrp_refuses_products_of_activations():
    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(3, 4, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.pool(self.a(x) * torch.sigmoid(self.b(x))).flatten(1))

    with pytest.raises(LayerError, match="sigmoid|mul"):
        explain(Gated().eval(), torch.randn(1, 3, 8, 8), "lrp")


def test_lrp_refuses_unknown_parametric_layer():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2)
    ).eval()
    with pytest.raises(LayerError, match="GroupNorm"):
        explain(model, torch.randn(1, 3, 8, 8), "lrp")


def test_lrp_functional_mean_and_add():
    """Functional global average and residual add give conserving relevance."""

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.c2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.fc = nn.Linear(4, 3, bias=False)

        def forward(self, x):
            h = F.relu(self.c1(x))
            h = F.relu(self.c2(h) + h)
            return self.fc(h.mean((2, 3)))

    model = Functional().eval()
    x = torch.randn(2, 3, 8, 8)
    e = explain(model, x, "lrp", rule="epsilon", epsilon=1e-9, target=0)
    with torch.no_grad():
        score = model(x)[:, 0]
    assert torch.allclose(e.raw.flatten(1).sum(1), score, rtol=1e-4, atol=1e-6)


def test_deeplift_with_activation_output_modified_in_place():
    """Rules return the activation's output as a view; a model that then changes it in
    place (legal after SiLU, whose backward keeps the input) gets copies, same map."""

    class Net(nn.Module):
        def __init__(self, in_place: bool) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.SiLU()
            self.fc = nn.Linear(4, 3)
            self.in_place = in_place

        def forward(self, x):
            h = self.act(self.conv(x))
            if self.in_place:
                h *= 2.0
            else:
                h = h * 2.0
            return self.fc(h.mean((2, 3)))

    torch.manual_seed(0)
    plain, in_place = Net(False).eval(), Net(True).eval()
    in_place.load_state_dict(plain.state_dict())
    x = torch.randn(3, 3, 8, 8)
    expected = explain(plain, x, "deeplift", target=1, baseline="blur")
    got = explain(in_place, x, "deeplift", target=1, baseline="blur")
    assert torch.allclose(got.raw, expected.raw, atol=1e-6)
    assert got.extras["delta"].abs().max() < 1e-4

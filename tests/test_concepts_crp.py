"""Concept Relevance Propagation (cnnlens.analysis.concepts.crp): conservation, zero
concepts, a slow per-channel reference, batch invariance, the model left as it was,
clear errors, and concept flow."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import cnnlens
from cnnlens.analysis import concept_flow, conditional_relevance
from cnnlens.errors import CnnlensError, InputError, LayerError, TargetError
from cnnlens.hooks import model_fingerprint, same_fingerprint
from cnnlens.layers import get_layer, set_layer
from cnnlens.nets import create
from helpers import with_bn_statistics


def plain_cnn(bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=bias),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, bias=bias),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, bias=bias),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4, bias=bias),
    ).eval()


def resnet() -> nn.Module:
    torch.manual_seed(0)
    return with_bn_statistics(create("resnet8", num_classes=4))


def images(n: int = 3, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


class _MaskGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, channel):
        ctx.channel = channel
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        keep = torch.zeros_like(grad)
        keep[:, ctx.channel] = 1
        return grad * keep, None


class MaskGrad(nn.Module):
    """Identity forward; the backward keeps one channel of the signal."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel

    def forward(self, x):
        return _MaskGrad.apply(x, self.channel)


def slow_reference(model, x, layer, channel, **kw) -> torch.Tensor:
    """One ``cnnlens.explain(..., "lrp")`` call per channel, on a copy of the model with
    the relevance at ``layer``'s output masked to that channel."""
    from unittest import mock

    masked = copy.deepcopy(model)
    set_layer(masked, layer, nn.Sequential(get_layer(masked, layer), MaskGrad(channel)))
    # the masked copy drops relevance by construction, so LRP's conservation safety net
    # (which would refuse it) is switched off for this reference only
    with mock.patch("cnnlens.attribution.lrp.check_conservation", lambda *a, **k: None):
        return cnnlens.explain(masked, x, "lrp", **kw).maps[:, 0]


@pytest.mark.parametrize(
    ("build", "layer", "composite"),
    [
        (resnet, "layer1", "epsilon-plus"),
        (resnet, "layer2", "epsilon-alpha2-beta1"),
        (plain_cnn, "2", "epsilon-plus"),
        (plain_cnn, "3", "epsilon"),
    ],
)
def test_maps_of_all_channels_sum_to_the_lrp_map(build, layer, composite):
    model, x = build(), images()
    maps = conditional_relevance(model, x, layer=layer, composite=composite, target=2)
    lrp = cnnlens.explain(model, x, "lrp", composite=composite, target=2).maps[:, 0]
    assert maps.shape == (3, get_layer_channels(model, layer), 16, 16)
    scale = float(lrp.abs().max())
    assert scale > 0
    assert torch.allclose(maps.sum(1), lrp, atol=1e-5 * scale)
    # and no single channel carries it all: the conditions really split it
    assert float((maps - lrp[:, None]).abs().amax()) > 1e-3 * scale


def get_layer_channels(model, layer) -> int:
    from cnnlens.hooks import capture_outputs

    with capture_outputs(model, [layer]) as out, torch.no_grad():
        model(images(1))
    return out[layer].shape[1]


def test_matches_a_slow_per_channel_reference():
    model, x = resnet(), images()
    channels = [0, 3, 7, [1, 2]]
    maps = conditional_relevance(model, x, layer="layer1", channels=channels, target=1)
    for j, c in enumerate(channels[:3]):
        ref = slow_reference(model, x, "layer1", c, target=1)
        assert torch.allclose(maps[:, j], ref, atol=1e-6 * float(ref.abs().max()) + 1e-12)
    both = slow_reference(model, x, "layer1", 1, target=1) + slow_reference(
        model, x, "layer1", 2, target=1
    )
    assert torch.allclose(maps[:, 3], both, atol=1e-6 * float(both.abs().max()))


def test_a_channel_with_zeroed_weights_gets_a_zero_map():
    model, x = plain_cnn(), images()
    with torch.no_grad():
        model[2].weight[5] = 0
        model[2].bias[5] = 0
    maps = conditional_relevance(model, x, layer="2", channels=[5, 4])
    assert torch.equal(maps[:, 0], torch.zeros_like(maps[:, 0]))
    assert float(maps[:, 1].abs().max()) > 0


def test_batch_invariance_and_chunking():
    model, x = resnet(), images(4)
    whole = conditional_relevance(model, x, layer="layer2", channels=[0, 5, 9])
    small = conditional_relevance(model, x, layer="layer2", channels=[0, 5, 9], batch_size=1)
    alone = conditional_relevance(model, x[2:3], layer="layer2", channels=[0, 5, 9])
    scale = float(whole.abs().max())
    assert torch.allclose(whole, small, atol=1e-6 * scale)
    assert torch.allclose(whole[2:3], alone, atol=1e-6 * scale)


def test_model_is_left_unchanged():
    model, x = resnet(), images(2)
    model.train()
    before = model_fingerprint(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    conditional_relevance(model, x, layer="layer1", channels=[0, 1])
    concept_flow(model, x, layer="layer2", channel=0, lower="layer1")
    assert model.training
    assert same_fingerprint(before, model_fingerprint(model))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_bad_layer_channel_target_raise_clear_errors():
    model, x = plain_cnn(), images(2)
    with pytest.raises(LayerError, match="nope"):
        conditional_relevance(model, x, layer="nope")
    with pytest.raises(InputError, match="0..7"):
        conditional_relevance(model, x, layer="2", channels=[8])
    with pytest.raises(InputError, match="channel"):
        conditional_relevance(model, x, layer="2", channels=[-1])
    with pytest.raises(TargetError):
        conditional_relevance(model, x, layer="2", target=9)
    with pytest.raises(CnnlensError, match="before"):
        concept_flow(model, x, layer="2", channel=0, lower="5")
    with pytest.raises(InputError, match="top"):
        concept_flow(model, x, layer="5", channel=0, lower="2", top=0)


def test_concept_flow_shares_account_for_the_concept():
    """Bias-free, epsilon -> 0: every rule conserves, so the lower channels' relevance
    under a concept sums to the concept's conditional relevance at the input, and the
    edges are the largest shares."""
    model, x = plain_cnn(bias=False), images(2)
    flow = concept_flow(model, x, layer="5", channel=3, lower="2", target=0, top=3)
    cond = conditional_relevance(model, x, layer="5", channels=[3], target=0)
    assert flow.relevance == pytest.approx(float(cond.double().sum()), rel=1e-4)
    assert float(flow.shares.sum()) == pytest.approx(1.0, abs=1e-5)
    assert len(flow.edges) == 3
    ranked = sorted(flow.shares.abs().tolist(), reverse=True)
    assert [abs(e["share"]) for e in flow.edges] == pytest.approx(ranked[:3])
    # an edge's relevance is that lower channel's own conditional relevance
    lower = conditional_relevance(model, x, layer="2", channels=[flow.edges[0]["channel"]],
                                  target=0)  # fmt: skip
    d = flow.to_dict()
    assert d["nodes"][0]["id"] == "5:3" and len(d["nodes"]) == 4
    assert d["edges"][0]["source"] == f"2:{flow.edges[0]['channel']}"
    # relevance of a lower channel conditioned on one upper concept is part of its
    # total (it carries the other concepts' relevance too): checked against the sum
    # over all upper concepts
    flows = [concept_flow(model, x, layer="5", channel=c, lower="2", target=0) for c in range(8)]
    all_upper = sum(f.shares.double() * f.relevance for f in flows)
    c0 = flow.edges[0]["channel"]
    assert float(all_upper[c0]) == pytest.approx(float(lower.double().sum()), rel=1e-3)

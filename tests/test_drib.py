"""DRIB dynamic channel gating: the gate, its training, counted and real savings, usage."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlens import macs, nets
from cnnlens.errors import ConfigError, LayerError
from cnnlens.studies.drib import (
    decisions,
    dynamic_macs,
    gate,
    gated_layers,
    load_gated,
    save_gated,
    sparse_model,
    train_gated,
    usage,
)
from cnnlens.studies.drib.credibility import _score
from cnnlens.studies.drib.gate import gate_parameter_names, opened_gates
from cnnlens.studies.drib.training import GateRecipe, selected_density


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


def _sparse_masks(model: nn.Module, seed: int = 0) -> None:
    """Masks with about a third exact zeros and values in (0, 1.4)."""
    g = torch.Generator().manual_seed(seed)
    for gl in gated_layers(model).values():
        gl.masks.data = torch.rand(gl.masks.shape, generator=g) * 2 - 0.6
        gl.project()


def _diverse_heads(model: nn.Module, x: torch.Tensor, seed: int = 0) -> None:
    """Heads that see only how an input differs from the batch mean (so inputs split)."""
    g = torch.Generator().manual_seed(seed)
    for gl in gated_layers(model).values():  # in forward order: later inputs depend on it
        seen: dict = {}
        handle = gl.head.register_forward_pre_hook(lambda _m, inp, seen=seen: seen.update(f=inp[0]))
        with torch.no_grad():
            model(x)
        handle.remove()
        mu = seen["f"].mean(0)
        w = torch.randn(gl.head.weight.shape, generator=g)
        gl.head.weight.data = w - torch.outer(w @ mu, mu) / mu.dot(mu).clamp_min(1e-12)


@pytest.fixture(scope="module")
def resnet8():
    torch.manual_seed(0)
    return _randomise_bn(nets.create("resnet8", num_classes=5))


@pytest.fixture(scope="module")
def vgg11():
    torch.manual_seed(0)
    return _randomise_bn(nets.create("vgg11", num_classes=5))


def test_gate_chooses_the_papers_layers(resnet8, vgg11):
    g = gate(resnet8, masks=3)
    assert list(gated_layers(g)) == ["layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1"]
    assert g.drib["links"] == {f"layer{s}.0.conv2": f"layer{s}.0.conv1" for s in (1, 2, 3)}
    v = gate(vgg11, masks=2)
    names = list(gated_layers(v))
    assert len(names) == 7  # 8 convs, all but the first
    assert v.drib["links"][names[1]] == names[0] and names[0] not in v.drib["links"]
    assert isinstance(resnet8.layer1[0].conv1, nn.Conv2d)  # the original is untouched


@pytest.mark.numerics
def test_open_masks_of_ones_give_the_ungated_outputs(resnet8, vgg11):
    x = torch.randn(4, 3, 32, 32)
    for model in (resnet8, vgg11):
        g = gate(model, masks=4).eval()
        with torch.no_grad():
            torch.testing.assert_close(g(x), model(x), rtol=1e-5, atol=1e-5)
            _sparse_masks(g)
            masked = g(x)
            with opened_gates(g):
                torch.testing.assert_close(g(x), model(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(masked, model(x), atol=1e-3)


def test_user_model_needs_the_layer_selection_hook():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip
    with pytest.raises(LayerError, match="layers="):
        gate(net)
    with pytest.raises(LayerError, match="not an nn.Conv2d"):
        gate(net, layers=[("1", None)])
    with pytest.raises(LayerError, match="BatchNorm2d"):
        gate(net, layers=[("0", "2")])
    with pytest.raises(ConfigError, match="not a gated layer"):
        gate(net, layers=[("3", "4", "0")])
    g = gate(net, masks=2, layers=[("0", "1"), ("3", "4", "0")]).eval()
    assert g.drib["links"] == {"3": "0"}
    x = torch.randn(5, 3, 16, 16)
    assert g(x).shape == (5, 3)
    d = dynamic_macs(g, x)
    assert d.reduction_ratio == pytest.approx(100 * -(3 * 2 + 8 * 2) / d.before)  # heads only
    with pytest.raises(LayerError, match="sparse path"):
        sparse_model(g)
    with pytest.raises(LayerError, match="no gated layers"):
        dynamic_macs(net, x)


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["resnet8", "vgg11"])
def test_sparse_path_computes_the_dense_masked_outputs(name, request):
    g = gate(request.getfixturevalue(name), masks=4).eval()
    _sparse_masks(g, seed=1)
    x = torch.randn(16, 3, 32, 32)
    _diverse_heads(g, x)
    sparse = sparse_model(g)
    with torch.no_grad():
        dense = g(x)
        groups = [len(torch.unique(gl.last_index)) for gl in gated_layers(g).values()]
        assert all(k > 1 for k in groups), groups  # batches really split into groups
        torch.testing.assert_close(sparse(x), dense, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(sparse(x[3:4]), dense[3:4], rtol=1e-4, atol=1e-4)


def test_dynamic_macs_count_active_channels(resnet8):
    g = gate(resnet8, masks=2).eval()
    for gl in gated_layers(g).values():  # mask 0 keeps the first half, mask 1 everything
        c = gl.masks.shape[1]
        gl.masks.data[0, c // 2 :] = 0
        gl.head.weight.data.zero_()  # argmax of equal logits: mask 0 for every input
    x = torch.randn(6, 3, 32, 32)
    full = macs(resnet8).layers
    d = dynamic_macs(g, x)
    saved = sum(full[f"layer{s}.0.conv{k}"] // 2 for s in (1, 2, 3) for k in (1, 2))
    heads = sum(gl.head.in_features * 2 for gl in gated_layers(g).values())
    assert d.before == macs(resnet8).total
    assert torch.all(d.per_input == d.before - saved + heads)
    assert d.reduction_ratio == pytest.approx(100 * (saved - heads) / d.before)
    assert all(int(v.max()) == 0 for v in decisions(g, x).values())


def test_training_keeps_the_constraints_and_fine_tune_freezes_gates():
    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=3)
    g = gate(model, masks=3)
    x, y = torch.randn(48, 3, 32, 32), torch.randint(0, 3, (48,))
    names = gate_parameter_names(g)
    assert names == {f"layer{s}.0.conv1.{p}" for s in (1, 2, 3) for p in ("head.weight", "masks")}
    backbone0 = g.layer1[0].conv2.weight.detach().clone()
    recipe = GateRecipe(gate_epochs=2, finetune_epochs=0, batch_size=16, augment=(),
                        gate_lr=0.5, density=0.0, lam=50.0)  # fmt: skip
    gating, _ = train_gated(g, (x, y), recipe=recipe)
    assert "density" in gating.history[-1]
    for gl in gated_layers(g).values():
        m = gl.masks.detach()
        assert float(m.min()) >= 0 and float(m.max()) <= 5
        # a strong push to density 0 reaches the clamp: every layer's minimum was exactly 0
        # over seeds 0-3 x ATEN_CPU_CAPABILITY default/avx2
        assert float(m.min()) == 0.0
        torch.testing.assert_close(gl.head.weight.norm(dim=1), torch.ones(3))
    assert not torch.equal(g.layer1[0].conv2.weight, backbone0)
    gates0 = {n: p.detach().clone() for n, p in g.named_parameters() if n in names}
    backbone1 = g.layer1[0].conv2.weight.detach().clone()
    recipe = GateRecipe(gate_epochs=1, finetune_epochs=1, batch_size=16, augment=(), gate_lr=1e-9)
    from cnnlens.studies.drib.training import finetune_fixed

    finetune_fixed(g, (x, y), recipe=recipe)
    for n, p in g.named_parameters():
        if n in names:
            assert torch.equal(p, gates0[n]) and p.requires_grad
    assert not torch.equal(g.layer1[0].conv2.weight, backbone1)
    g.eval()
    g(x[:4])
    # 0.0-0.018 over seeds 0-3 x ATEN_CPU_CAPABILITY default/avx2: far from 1
    assert float(selected_density(g).detach()) < 1.0


def test_saved_gated_model_rebuilds(tmp_path, vgg11):
    g = gate(vgg11, masks=2).eval()
    _sparse_masks(g, seed=3)
    data = (torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,)))
    save_gated(g, tmp_path / "m", data=data)
    back = load_gated(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(back(data[0]), g(data[0]))
    assert back.drib == g.drib
    import cnnlens

    opened = cnnlens.load(tmp_path / "m")  # every command that opens a model reads it too
    with torch.no_grad():
        torch.testing.assert_close(opened(data[0]), g(data[0]))


def test_credibility_score_counts_top_channels():
    bits = torch.tensor([[5.0, 4.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    kept = torch.tensor([[True, False, True, False], [True, True, True, True]])
    s = _score("l", bits, kept)
    # image 0: k=2, top-2 = {0, 1}, kept {0, 2}: 1/2; image 1 keeps all: 1
    assert s.credibility == pytest.approx(0.75)
    assert s.dropped_top == pytest.approx(0.25)
    assert s.kept_bits == pytest.approx((6 / 10 + 1) / 2)
    assert s.chance == pytest.approx((0.5 + 1) / 2)


def test_usage_frequencies_and_purity(resnet8):
    g = gate(resnet8, masks=3).eval()
    _sparse_masks(g, seed=2)
    first = list(gated_layers(g))[0]
    gated_layers(g)[first].head.weight.data.zero_()  # every input takes mask 0 here
    x, y = torch.randn(30, 3, 32, 32), torch.arange(30) % 5
    u = usage(g, x, labels=y)
    assert torch.equal(u.counts, torch.full((5,), 6))
    assert torch.allclose(u.index_freq[first][:, 0], torch.ones(5))
    assert torch.allclose(u.purity[first], torch.ones(5))
    active = (gated_layers(g)[first].masks[0] != 0).float()
    assert torch.allclose(u.channel_freq[first], active.expand(5, -1))
    for name, freq in u.index_freq.items():
        assert torch.allclose(freq.sum(1), torch.ones(5))
        assert bool((u.purity[name] >= 1 / 3 - 1e-6).all())


def test_alternating_gives_each_group_its_loss_and_after_step():
    from cnnlens.studies.drib.training import GateLoss
    from cnnlens.train import Alternating, Classification, OptimizerConfig

    torch.manual_seed(0)
    g = gate(nets.create("resnet8", num_classes=3), masks=2)
    names = gate_parameter_names(g)
    calls = []
    objective = Alternating(
        {
            "gates": (lambda n: n in names, OptimizerConfig("adam", lr=0.01, weight_decay=0)),
            "backbone": (lambda n: n not in names, OptimizerConfig("sgd", lr=0.01)),
        },
        base=GateLoss(lam=100.0, density=0.0),
        losses={"backbone": Classification()},
        after_step={"gates": lambda m: calls.append(m)},
    )
    objective.bind(g)
    groups = objective.parameter_groups(list(g.parameters()))
    configs = objective.optimizer_configs(OptimizerConfig())
    opts = {k: configs[k].build(ps) for k, ps in groups.items()}
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))
    out = objective.train_step(g.train(), x, y, opts)
    assert calls == [g]
    # the gates pay 100 * density^2 (density about 1 at the start), the backbone CE only
    assert out["loss_gates"] / 8 > 50 > out["loss_backbone"] / 8
    assert "density" in out
    with pytest.raises(ConfigError, match="unknown groups"):
        Alternating(objective.groups, losses={"nonsense": Classification()})

"""FGVis (Wagner et al. 2019) and the linear approximation: the two baselines of paper
004 added to the registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens
from cnnlens.attribution.fgvis import evidence_bound
from cnnlens.errors import LayerError
from cnnlens.hooks import HookSet, model_fingerprint, same_fingerprint


def _small_net(seed: int = 0, act=nn.ReLU) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), act(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 8),
    ).eval()  # fmt: skip


def _region_net() -> nn.Module:
    """Class 0's logit reads only a 10 x 10 square of the image, through a ReLU: where its
    evidence lies is known by construction (no training, so the same on every CPU)."""
    conv = nn.Conv2d(3, 1, 1, bias=False)
    head = nn.Linear(32 * 32, 2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        weight = torch.zeros(2, 32, 32)
        weight[0, 4:14, 6:16] = 0.05
        head.weight.copy_(weight.flatten(1))
        head.bias.copy_(torch.tensor([-1.0, 0.0]))
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), head).eval()


def _kept_score(model, x, keep, target):
    with torch.no_grad():
        return torch.softmax(model(x * keep), 1).gather(1, target[:, None])[:, 0]


def test_preserving_mask_keeps_the_score_better_than_random_masks_of_its_area():
    model = _region_net()
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fp = model_fingerprint(model)
    target = torch.zeros(8, dtype=torch.long)
    e = cnnlens.explain(model, x, "fgvis", target=target, iterations=100)
    assert same_fingerprint(fp, model_fingerprint(model))
    assert e.maps.shape == (len(x), 1, 32, 32) and 0 <= e.maps.min() and e.maps.max() <= 1
    k = 102  # 10 % of the pixels, the same area for both masks
    flat = e.maps.flatten(1)
    top = torch.zeros_like(flat).scatter_(1, flat.topk(k, 1).indices, 1.0).view_as(e.maps)
    ours = _kept_score(model, x, top, target)
    g = torch.Generator().manual_seed(0)
    random = torch.stack(
        [
            _kept_score(model, x, torch.zeros_like(flat).scatter_(
                1, torch.rand(flat.shape, generator=g).topk(k, 1).indices, 1.0
            ).view_as(e.maps), target)
            for _ in range(10)
        ]
    ).mean(0)  # fmt: skip
    assert ours.mean() > random.mean() + 0.3, (ours.mean(), random.mean())
    assert bool((ours > random).all())


def _relu_outputs(model, x):
    """Every ReLU output (after the bound's hooks, which run first) in call order."""
    seen: list[torch.Tensor] = []
    with HookSet() as hooks:
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                hooks.forward(m, lambda _m, _i, out: seen.append(out.detach().clone()))
        with torch.no_grad():
            model(x)
    return seen


def test_the_bound_never_lets_a_perturbed_activation_exceed_the_original():
    model = _small_net(1)
    model[1].inplace = True  # an in-place ReLU is bounded too
    x = torch.randn(3, 3, 16, 16)
    e = x + 2 * torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    original = _relu_outputs(model, x)
    free = _relu_outputs(model, e)
    assert any((f > o).any() for f, o in zip(free, original))  # unbounded, they do exceed
    fp = model_fingerprint(model)
    with evidence_bound(model, x) as bound:
        seen: list[torch.Tensor] = []
        with HookSet() as hooks:
            for m in model.modules():
                if isinstance(m, nn.ReLU):
                    hooks.forward(m, lambda _m, _i, out: seen.append(out.detach().clone()))
            bound(e.clone().requires_grad_(True))
    assert same_fingerprint(fp, model_fingerprint(model))
    assert len(seen) == len(original)
    for s, o in zip(seen, original):
        assert (s <= o).all() and (s >= 0).all()
    # the first ReLU sees the unbounded input: its output is exactly min(h(e), h(x))
    torch.testing.assert_close(seen[0], torch.minimum(free[0], original[0]))


def test_the_bound_filters_the_gradient_of_exceeding_neurons():
    """A neuron above its original activation passes no gradient back."""
    model = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(4, 1)).eval()
    with torch.no_grad():
        model[2].weight.fill_(1.0)
        model[2].bias.zero_()
    x = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]]])
    e = torch.tensor([[[[2.0, 0.5], [3.0, 0.2]]]], requires_grad=True)
    with evidence_bound(model, x) as bound:
        out = bound(e)
    (g,) = torch.autograd.grad(out.sum(), e)
    assert float(out.detach()) == pytest.approx(1.0 + 0.5 + 1.0 + 0.2)
    torch.testing.assert_close(g, torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]]))


def test_batch_independence_and_determinism():
    model, x = _small_net(2), torch.randn(4, 3, 16, 16)
    target = torch.tensor([0, 3, 5, 1])
    together = cnnlens.explain(model, x, "fgvis", target=target, iterations=30)
    again = cnnlens.explain(model, x, "fgvis", target=target, iterations=30)
    torch.testing.assert_close(together.maps, again.maps, rtol=0, atol=0)
    alone = cnnlens.explain(model, x, "fgvis", target=target, iterations=30, batch_size=1)
    assert (together.maps - alone.maps).abs().mean() < 1e-3
    one = cnnlens.explain(model, x[2:3], "fgvis", target=target[2:3], iterations=30)
    assert (together.maps[2:3] - one.maps).abs().mean() < 1e-3


def test_deletion_game_removes_the_class():
    model, x = _small_net(3), torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        target = model(x).argmax(1)
    e = cnnlens.explain(model, x, "fgvis", game="delete", iterations=60, l1=0.1)
    deleted = x * (1 - e.maps)
    with torch.no_grad():
        before = torch.softmax(model(x), 1).gather(1, target[:, None])
        after = torch.softmax(model(deleted), 1).gather(1, target[:, None])
    assert (after < before).all()


class _Explodes(nn.Module):
    """Raises on its ``n``-th forward: an error in the middle of the optimisation."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.net, self.n, self.calls = _small_net(4), n, 0

    def forward(self, x):
        self.calls += 1
        if self.calls >= self.n:
            raise RuntimeError("boom")
        return self.net(x)


def test_model_unchanged_also_after_an_error():
    model = _Explodes(6).train()
    fp = model_fingerprint(model)
    with pytest.raises(RuntimeError, match="boom"):
        cnnlens.explain(model, torch.randn(2, 3, 16, 16), "fgvis", iterations=20)
    assert same_fingerprint(fp, model_fingerprint(model))
    model.calls, model.n = 0, 10**9
    cnnlens.explain(model, torch.randn(2, 3, 16, 16), "fgvis", iterations=3)
    assert same_fingerprint(fp, model_fingerprint(model))


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        return self.head(F.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize(
    ("model", "words"),
    [(_Functional(), "functional relu"), (_small_net(act=nn.SiLU), "SiLU")],
)
def test_refuses_models_where_the_defence_cannot_be_placed(model, words):
    fp = model_fingerprint(model)
    with pytest.raises(LayerError, match=words):
        cnnlens.explain(model, torch.randn(1, 3, 16, 16), "fgvis", iterations=2)
    assert same_fingerprint(fp, model_fingerprint(model))
    # without the defence the optimisation runs (the paper's undefended variant)
    cnnlens.explain(model, torch.randn(1, 3, 16, 16), "fgvis", iterations=2, defense=False)


def test_linear_approx_is_the_signed_gradient_times_activation_at_the_layer():
    model, x = _small_net(5), torch.randn(3, 3, 16, 16)
    target = torch.tensor([1, 4, 7])
    e = cnnlens.explain(model, x, "linear-approx", target=target, layer="4")
    a = model[:5](x).requires_grad_(True)
    (g,) = torch.autograd.grad(model[5:](a).gather(1, target[:, None]).sum(), a)
    expected = (g * a).sum(1, keepdim=True).detach()
    torch.testing.assert_close(e.extras["layer_map"], expected, rtol=1e-4, atol=1e-6)
    assert (expected < 0).any()  # signed: no ReLU
    hires = cnnlens.explain(model, x, "hirescam", target=target, layer="4")
    torch.testing.assert_close(hires.extras["layer_map"], expected.clamp_min(0))


def test_both_are_registered_with_their_facts():
    names = cnnlens.methods()
    assert "fgvis" in names and "linear-approx" in names
    from cnnlens.attribution import get

    assert get("fgvis").cost({"iterations": 40}) == 40.5
    assert get("linear-approx").cost() == 1.0

"""DRIB's pruning baselines: L1-norm filter pruning and network slimming to a MAC budget
(Torch-Pruning), pruned models saved and loaded without pickle, the prune-baseline command."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlens import nets
from cnnlens.cost import macs
from cnnlens.errors import CheckpointError, ConfigError, LayerError
from cnnlens.hooks import model_fingerprint, same_fingerprint
from cnnlens.studies.drib.baselines import (
    MAX_LAYER_RATIO,
    SEARCH_STEPS,
    mac_budget,
    prune_copy,
    prune_to_macs,
    slimming_batchnorms,
    slimming_objective,
)
from helpers import with_bn_statistics


def _convs(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.mark.parametrize("method", ["l1", "slimming"])
def test_resnet20_pruned_to_half_the_macs_really_has_fewer_channels(method):
    model = with_bn_statistics(nets.create("resnet20", num_classes=10))
    before = model_fingerprint(model)
    result = prune_to_macs(model, (3, 32, 32), method=method, reduction=50)
    assert same_fingerprint(before, model_fingerprint(model))  # the original is untouched
    total = macs(result.model).total
    assert total == result.macs <= result.budget == int(result.macs_before * 0.5)
    assert result.reduction >= 50
    old, new = _convs(model), _convs(result.model)
    assert sum(new.values()) < sum(old.values())
    # padding shortcuts: only each block's first conv loses channels, the residual stream stays
    assert all(new[n] == old[n] for n in old if not (n.startswith("layer") and "conv1" in n))
    assert any(new[n] < old[n] for n in old if n.endswith("conv1") and n.startswith("layer"))
    x = torch.randn(2, 3, 32, 32)
    assert result.model(x).shape == (2, 10)
    # just under the budget: the bisection's next smaller ratio does not fit
    step = MAX_LAYER_RATIO / 2**SEARCH_STEPS
    looser = prune_copy(
        model,
        torch.zeros(1, 3, 32, 32),
        method=method,
        ratio=result.ratio - step,
        ignored=_default(model),
    )
    assert macs(looser).total > result.budget


def _default(model):
    from cnnlens.studies.drib.baselines import default_ignored

    return default_ignored(model)


def test_l1_keeps_each_layers_largest_l1_filters():
    model = with_bn_statistics(nets.create("vgg11", num_classes=10))
    result = prune_to_macs(model, (3, 32, 32), method="l1", reduction=40, steps=5)
    conv, kept = model.features[0], result.model.features[0]
    k = kept.out_channels
    assert k < conv.out_channels
    norms = conv.weight.abs().sum((1, 2, 3))
    top = norms.topk(k).indices.sort().values
    assert torch.equal(kept.weight, conv.weight[top])


def test_slimming_uses_one_global_threshold_on_batchnorm_scales():
    model = with_bn_statistics(nets.create("vgg11", num_classes=10), seed=3)
    result = prune_to_macs(model, (3, 32, 32), method="slimming", reduction=50, steps=5)
    kept_min, dropped_max = [], []
    for (_n, bn), (_m, new) in zip(
        [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)],
        [(n, m) for n, m in result.model.named_modules() if isinstance(m, nn.BatchNorm2d)],
        strict=True,
    ):
        gamma = bn.weight.detach().abs()
        kept = torch.isin(gamma, new.weight.detach().abs())
        if (~kept).any() and kept.sum() > round((1 - MAX_LAYER_RATIO) * len(gamma)):
            dropped_max.append(float(gamma[~kept].max()))
        kept_min.append(float(gamma[kept].min()))
    assert dropped_max, "slimming removed no channel"
    assert max(dropped_max) <= min(kept_min)


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "method"), [("resnet56", "l1"), ("vgg16", "slimming")])
def test_deeper_nets_reach_the_budget(arch, method):
    model = with_bn_statistics(nets.create(arch, num_classes=10))
    result = prune_to_macs(model, (3, 32, 32), method=method, reduction=50, steps=8)
    assert 50 <= result.reduction < 60
    assert result.model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_resnet_with_projection_shortcuts_prunes_the_residual_stream():
    model = with_bn_statistics(nets.create("resnet20", num_classes=10, shortcut="B"))
    result = prune_to_macs(model, (3, 32, 32), method="l1", reduction=50)
    assert result.model.conv1.out_channels < 16  # the stem, coupled to the whole stage
    assert result.model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


class _UserNet(nn.Module):
    def __init__(self, pad: bool) -> None:
        super().__init__()
        self.pad = pad
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(16 if pad else 8, 16, 3, padding=1)
        self.b2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, 4, 4))
        return self.fc(F.relu(self.b2(self.c2(x))).mean((2, 3)))


def test_user_conv_net_is_pruned_and_untraceable_one_named():
    net = with_bn_statistics(_UserNet(pad=False))
    result = prune_to_macs(net, (1, 16, 16), method="l1", reduction=50)
    assert result.model.c1.out_channels < 8 and result.model.fc.out_features == 3
    assert result.model(torch.zeros(2, 1, 16, 16)).shape == (2, 3)
    with pytest.raises(LayerError, match="channel padding"):
        prune_to_macs(with_bn_statistics(_UserNet(pad=True)), (1, 16, 16), reduction=50)
    # the layers around the padding named as ignored: only c2's output is pruned
    ok = prune_to_macs(
        with_bn_statistics(_UserNet(pad=True)), (1, 16, 16), reduction=30, ignored=["c1", "fc"]
    )
    assert ok.model.c1.out_channels == 8 and ok.model.c2.out_channels < 16


def test_budget_and_method_errors():
    with pytest.raises(ConfigError, match="exactly one"):
        mac_budget(100, macs=50, reduction=50)
    with pytest.raises(ConfigError, match="exactly one"):
        mac_budget(100)
    with pytest.raises(ConfigError, match="percentage"):
        mac_budget(100, reduction=100)
    with pytest.raises(ConfigError, match="MAC target"):
        mac_budget(100, macs=200)
    assert mac_budget(1000, reduction=25) == 750 and mac_budget(1000, macs=600.0) == 600
    model = nets.create("resnet8", num_classes=10)
    with pytest.raises(ConfigError, match="method"):
        prune_to_macs(model, (3, 32, 32), method="random", reduction=50)
    # a fresh net's BatchNorm scales are all 1: nothing ranks below the rest
    with pytest.raises(ConfigError, match="sparsity penalty"):
        prune_to_macs(model, (3, 32, 32), method="slimming", reduction=50)


def test_slimming_penalty_is_lambda_times_l1_of_the_pruned_batchnorms():
    model = with_bn_statistics(nets.create("resnet8", num_classes=10))
    from cnnlens.studies.drib.baselines import default_ignored

    bns = slimming_batchnorms(model, (3, 32, 32), default_ignored(model))
    # padding shortcuts: exactly each block's first BatchNorm
    names = {id(m): n for n, m in model.named_modules()}
    assert sorted(names[id(b)] for b in bns) == ["layer1.0.bn1", "layer2.0.bn1", "layer3.0.bn1"]
    objective = slimming_objective(bns, lam=0.01)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss, _ = objective.loss(model, x, y)
    ce = F.cross_entropy(model(x), y)
    expected = ce + 0.01 * sum(b.weight.abs().sum() for b in bns)
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_sparsity_training_through_fit_shrinks_the_scales():
    from cnnlens.data import load
    from cnnlens.studies.drib.baselines import default_ignored
    from cnnlens.train import OptimizerConfig, TrainConfig, fit

    train = load("shapes", split="train", n=128)
    totals = {}
    for lam in (0.0, 0.05):
        torch.manual_seed(0)
        model = nets.create("resnet8", num_classes=10)
        bns = slimming_batchnorms(model, (3, 32, 32), default_ignored(model))
        config = TrainConfig(
            epochs=1, batch_size=32, optimizer=OptimizerConfig(lr=0.05, weight_decay=0), augment=()
        )
        fit(model, train, config=config, objective=slimming_objective(bns, lam))
        totals[lam] = float(sum(b.weight.detach().abs().sum() for b in bns))
    # the L1 subgradient moves each scale by lr * lambda per step whatever the data: the
    # ratio was 0.983669 (+- 2e-7) over seeds 0-3 x ATEN_CPU_CAPABILITY default/avx2
    assert totals[0.05] < totals[0.0]


def test_pruned_model_saved_and_opened_without_pickle(tmp_path):
    import cnnlens
    from cnnlens.studies.drib.pruned_models import load_pruned, save_pruned

    model = with_bn_statistics(nets.create("resnet8", num_classes=4))
    pruned = prune_to_macs(model, (3, 32, 32), method="l1", reduction=40).model
    save_pruned(pruned, tmp_path / "m", classes=list("abcd"), input_shape=(3, 32, 32))
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert (
        meta["arch"]["name"] == "resnet8" and "layer1.0.conv1" in meta["extra"]["pruned"]["shapes"]
    )
    loaded = cnnlens.load(tmp_path / "m")
    assert _convs(loaded) == _convs(pruned)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), pruned.eval()(x), atol=1e-6)
    # a user's own net: rebuilt from the unpruned instance given
    net = with_bn_statistics(_UserNet(pad=False))
    small = prune_to_macs(net, (1, 16, 16), reduction=50).model
    save_pruned(small, tmp_path / "u")
    again = load_pruned(tmp_path / "u", model=_UserNet(pad=False))
    with torch.no_grad():
        x = torch.randn(2, 1, 16, 16)
        assert torch.allclose(again(x), small.eval()(x), atol=1e-6)
    # shapes that do not fit the weights: a CheckpointError, not a half-loaded model
    meta = json.loads((tmp_path / "u" / "model.json").read_text())
    meta["extra"]["pruned"]["shapes"]["c1"]["out"] = 7
    (tmp_path / "u" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError):
        load_pruned(tmp_path / "u", model=_UserNet(pad=False))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """ResNet-8 trained one epoch on ``digits`` (small and quick to load): a run to prune."""
    from cnnlens.train import OptimizerConfig, TrainConfig
    from cnnlens.train.classifier import train_classifier

    out = tmp_path_factory.mktemp("tiny-run")
    config = TrainConfig(
        epochs=1, batch_size=64, optimizer=OptimizerConfig(lr=0.05), augment=(), seed=0
    )
    train_classifier(data="digits", arch="resnet8", out=out, config=config)
    return out


def test_prune_baseline_command_writes_the_table_and_models(tiny_run, tmp_path, capsys):
    import cnnlens
    from cnnlens.cli import main

    out = tmp_path / "baselines"
    args = ["drib", "prune-baseline", "--model", str(tiny_run), "--method", "both"]
    args += ["--reduction", "40", "--epochs", "1", "--lambda", "1e-3"]
    args += ["--n-train", "64", "--n-test", "64", "--out", str(out)]
    assert main(args) == 0
    rows = (out / "baselines.csv").read_text().splitlines()
    assert rows[0].startswith("method,macs,reduction,accuracy")
    assert [r.split(",")[0] for r in rows[1:]] == ["unpruned", "l1", "slimming"]
    saved = json.loads((out / "baselines.json").read_text())
    budget = saved["settings"]["budget_macs"]
    unpruned = saved["rows"][0]["macs"]
    assert budget == int(unpruned * 0.6)
    for row in saved["rows"][1:]:
        assert row["macs"] <= budget and row["reduction"] >= 40 and 0 <= row["accuracy"] <= 1
        model = cnnlens.load(out / row["method"] / "model")
        assert macs(model, (1, 32, 32)).total == row["macs"]
    assert "| l1 |" in (out / "baselines.md").read_text()
    assert "reduction (%)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "random"], "--method"),
        (["--macs", "1", "--reduction", "50"], "not both"),
        (["--reduction", "150"], "percentage"),
    ],
)
def test_prune_baseline_command_bad_input_is_one_line(tiny_run, tmp_path, capsys, extra, message):
    from cnnlens.cli import main

    args = ["drib", "prune-baseline", "--model", str(tiny_run), "--out", str(tmp_path / "o")]
    assert main(args + extra + ["--epochs", "0", "--n-test", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


@pytest.mark.numerics
def test_batchnorm_recalibration_fits_the_statistics_and_changes_nothing_else():
    from cnnlens.studies.drib.baseline_study import recalibrate_batchnorm

    model = with_bn_statistics(nets.create("resnet8", num_classes=4))
    model.layer1.train()  # a mixed state, to be restored as it was
    modes = [m.training for m in model.modules()]
    weights = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 3, 32, 32, generator=g), torch.randint(0, 4, (300,), generator=g)
    recalibrate_batchnorm(model, (x, y), n=256)
    with torch.no_grad():  # the cumulative average of the two chunks' batch statistics
        chunks = [model.conv1(x[:128]), model.conv1(x[128:256])]
    mean = torch.stack([c.mean((0, 2, 3)) for c in chunks]).mean(0)
    var = torch.stack([c.var((0, 2, 3)) for c in chunks]).mean(0)
    assert torch.allclose(model.bn1.running_mean, mean, atol=1e-5)
    assert torch.allclose(model.bn1.running_var, var, rtol=1e-4)
    assert model.bn1.momentum == 0.1 and [m.training for m in model.modules()] == modes
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))

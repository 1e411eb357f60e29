"""cnnlens.cost.macs: multiply-accumulate counts (paper 000, section 4.1)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
import torch
from torch import nn

from cnnlens import nets
from cnnlens.cost import MacReport, macs
from cnnlens.errors import InputError


@pytest.fixture(autouse=True)
def _one_thread():
    """Single-image forwards are fastest on one thread (no spinning on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def paper_round(m: float) -> float:
    """Millions at two decimals, then half up to one (how paper 000 reports MACs)."""
    return float(Decimal(f"{m:.2f}").quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def test_vgg16_matches_paper_000_table_1():
    report = macs(nets.create("vgg16"), (3, 32, 32))
    assert report.total == 313_196_544 + 5_120
    assert round(report.total_m, 1) == 313.2
    assert paper_round(report.total_m) == 313.2
    assert report.layers["head"] == 512 * 10
    assert report.layers["features.0"] == 3 * 9 * 32 * 32 * 64


def test_resnet56_b_matches_paper_000_table_2():
    report = macs(nets.create("resnet56", shortcut="B"))
    assert report.total == 125_747_840
    assert paper_round(report.total_m) == 125.8


@pytest.mark.parametrize(
    "name,shortcut,total",
    [
        ("resnet20", "A", 40_551_040),
        ("resnet20", "B", 40_813_184),
        ("resnet56", "A", 125_485_696),
        ("resnet56", "B", 125_747_840),
    ],
)
def test_resnet_counts_per_shortcut(name, shortcut, total):
    report = macs(nets.create(name, shortcut=shortcut))
    assert report.total == total
    projections = {k: v for k, v in report.layers.items() if ".shortcut." in k}
    if shortcut == "A":
        assert projections == {}
    else:  # two 1x1 projections: 16*32*16*16 and 32*64*8*8
        assert projections == {"layer2.0.shortcut.0": 131_072, "layer3.0.shortcut.0": 131_072}


def test_module_called_twice_is_counted_twice_and_per_image():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1, groups=2)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            x = self.conv(self.conv(x))
            return self.head(x.mean((2, 3)))

    report = macs(Twice(), torch.zeros(5, 4, 8, 8))
    one_conv = (4 // 2) * 9 * 8 * 8 * 4
    assert report.layers == {"conv": 2 * one_conv, "head": 12}
    assert report.calls == {"conv": 2, "head": 1}
    assert report.total == 2 * one_conv + 12


def test_table_and_millions():
    report = macs(nets.create("lenet5", in_channels=1), (1, 32, 32))
    assert isinstance(report, MacReport)
    assert report.total_m == pytest.approx(report.total / 1e6)
    table = report.table()
    assert table.startswith("| layer | type | calls | MACs (M) | share (%) |")
    assert "| conv1 | Conv2d | 1 |" in table and "| head | Linear | 1 |" in table
    assert report.layers["conv1"] == 1 * 25 * 28 * 28 * 6


def test_hooks_removed_and_mode_restored_also_on_error():
    model = nets.create("resnet8").train()
    macs(model)
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError):
        macs(model, (5, 32, 32))  # wrong channel count fails inside the forward
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_bad_input_size():
    with pytest.raises(InputError):
        macs(nets.create("resnet8"), (3, 0, 32))
    with pytest.raises(InputError):
        macs(nets.create("resnet8"), torch.zeros(3))

"""cnnlens.checkpoint: safetensors + JSON round trip and refusal of bad files."""

from __future__ import annotations

import collections
import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cnnlens import nets
from cnnlens.checkpoint import load, load_state_dict_file, read_meta, save
from cnnlens.errors import CheckpointError


def _trained_like(name: str = "resnet8", **kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = nets.create(name, **kwargs)
    with torch.no_grad():  # non-trivial BN statistics, so buffers matter
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_round_trip(tmp_path):
    model = _trained_like("resnet8", num_classes=4, shortcut="B", width=2)
    save(model, tmp_path / "m", classes=list("abcd"), mean=torch.tensor([0.5, 0.4, 0.3]),
         std=(0.2, 0.2, 0.2), input_shape=(3, 32, 32), extra={"epochs": 3})  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.json",
        "model.safetensors",
    ]
    loaded = load(tmp_path / "m")
    assert not loaded.training
    assert loaded.arch == model.arch
    assert loaded.meta == {
        "classes": ["a", "b", "c", "d"],
        "mean": pytest.approx([0.5, 0.4, 0.3]),
        "std": [0.2, 0.2, 0.2],
        "input_shape": [3, 32, 32],
        "extra": {"epochs": 3},
    }
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    meta = read_meta(tmp_path / "m")
    assert meta["arch"]["kwargs"]["shortcut"] == "B"
    assert meta["format_version"] == 1 and "cnnlens_version" in meta


def test_load_into_given_model_and_device(tmp_path):
    model = _trained_like("lenet5", in_channels=1)
    del model.arch  # a model without an architecture record is saved too
    save(model, tmp_path)
    with pytest.raises(CheckpointError, match="no architecture"):
        load(tmp_path)
    fresh = nets.create("lenet5", in_channels=1)
    loaded = load(tmp_path, model=fresh, device="cpu")
    assert loaded is fresh
    torch.testing.assert_close(loaded.conv1.weight, model.conv1.weight)


def test_truncated_safetensors(tmp_path):
    save(_trained_like(), tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checksum"):
        load(tmp_path)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_state_dict_file(nets.create("resnet8"), weights)


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="model.json"):
        load(tmp_path)
    save(_trained_like(), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict_file(nets.create("resnet8"), tmp_path / "nope.pt")


def test_unknown_architecture_and_bad_json(tmp_path):
    save(_trained_like(), tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["arch"]["name"] = "resnet9000"
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet9000'"):
        load(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_meta(tmp_path)


def test_wrong_architecture_lists_keys(tmp_path):
    save(_trained_like("resnet8"), tmp_path)
    with pytest.raises(CheckpointError) as info:
        load(tmp_path, model=nets.create("resnet14"))
    message = str(info.value)
    assert "missing keys: 'layer1.1.bn1.bias'" in message
    assert "in all)" in message  # more than ten keys: first ten and the count


def test_missing_and_unexpected_keys(tmp_path):
    model = nets.create("resnet8")
    state = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "head.bias"}
    save_file(missing, tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys: 'head.bias' \(1\)"):
        load_state_dict_file(model, tmp_path / "missing.safetensors")
    extra = dict(state, **{"head.scale": torch.ones(1)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys: 'head.scale' \(1\)"):
        load_state_dict_file(model, tmp_path / "extra.pt")


def test_shape_mismatch(tmp_path):
    save(_trained_like("resnet8", num_classes=10), tmp_path)
    with pytest.raises(
        CheckpointError, match=r"shape mismatch.*head.weight \(10, 64\) vs \(5, 64\)"
    ):
        load(tmp_path, model=nets.create("resnet8", num_classes=5))


def test_pt_wrappers_and_module_prefix(tmp_path):
    source = _trained_like("resnet8")
    prefixed = collections.OrderedDict(("module." + k, v) for k, v in source.state_dict().items())
    torch.save({"state_dict": prefixed, "epoch": 7}, tmp_path / "wrapped.pth")
    torch.save({"model": source.state_dict()}, tmp_path / "model.pt")
    for name in ("wrapped.pth", "model.pt"):
        target = nets.create("resnet8")
        assert load_state_dict_file(target, tmp_path / name) is target
        torch.testing.assert_close(target.state_dict(), source.state_dict())


class Payload:
    """A non-tensor object: torch.load(weights_only=True) must refuse to unpickle it."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pickled_object_is_refused(tmp_path, capsys):
    state = dict(nets.create("resnet8").state_dict(), extra=Payload())
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict_file(nets.create("resnet8"), tmp_path / "evil.pt")
    assert "unpickled!" not in capsys.readouterr().out


def test_garbage_pt(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_state_dict_file(nets.create("resnet8"), tmp_path / "junk.pt")

"""Core helpers: errors, layer lookup, hooks, chunking, atomic writes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlens import nets
from cnnlens.accel import fast_runner, forward
from cnnlens.accel.fast import _FAST_COPY
from cnnlens.chunking import chunk_size, run_chunked
from cnnlens.errors import CnnlensError, InputError, LayerError
from cnnlens.hooks import capture_outputs, frozen, model_fingerprint, same_fingerprint
from cnnlens.io import atomic_path, check_writable_folder, write_text
from cnnlens.layers import auto_layer, final_linear, get_layer, penultimate_features


class UserNet(nn.Module):
    """A user's model: Sequential features, Flatten, a Linear head not called ``head``."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(torch.relu(self.features(x)))))


def test_every_error_is_a_cnnlens_error():
    assert issubclass(LayerError, CnnlensError) and issubclass(InputError, ValueError)


def test_get_layer_suggests_close_names():
    model = nets.create("resnet20")
    assert get_layer(model, "layer3.2.conv2") is model.layer3[2].conv2
    with pytest.raises(LayerError, match="layer3"):
        get_layer(model, "layer3.2.conv9")


def test_auto_layer_picks_last_spatial_block():
    assert auto_layer(nets.create("resnet20")) == "layer3"
    assert auto_layer(UserNet()) == "features"


def test_auto_layer_probes_once_per_model_and_shape():
    model = nets.create("resnet20").eval()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    x = torch.zeros(2, 3, 32, 32)
    assert auto_layer(model, x) == "layer3"
    assert auto_layer(model, x) == "layer3"
    assert len(calls) == 1  # the second answer comes from the cache
    auto_layer(model, torch.zeros(1, 3, 16, 16))  # another input shape probes again
    assert len(calls) == 2
    model.layer3[2].relu2 = nn.ReLU()  # a changed module tree probes again
    assert auto_layer(model, x) == "layer3"
    assert len(calls) == 3

    user = UserNet().eval()
    user.register_forward_hook(lambda *_: calls.append(1))
    assert final_linear(user, x)[0] == final_linear(user, x)[0] == "fc"
    assert len(calls) == 4  # one probe forward gives the trace and the logits, once


def test_final_linear_and_penultimate_on_user_model():
    model = UserNet().eval()
    name, layer = final_linear(model)
    assert name == "fc" and layer is model.fc
    x = torch.randn(4, 3, 16, 16)
    feats = penultimate_features(model, x)
    assert torch.allclose(model.fc(feats), model(x), atol=1e-6)
    resnet = nets.create("resnet8").eval()
    assert torch.allclose(penultimate_features(resnet, x), resnet.forward_features(x))


def test_final_linear_must_give_the_logits():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3), nn.Tanh())
    with pytest.raises(LayerError, match="does not produce the logits"):
        final_linear(model, torch.randn(1, 3, 2, 2))


def test_capture_removes_hooks_even_on_error():
    model = nets.create("resnet8").eval()  # eval: the forward must not move BN statistics
    before = model_fingerprint(model)
    with pytest.raises(RuntimeError):
        with capture_outputs(model, ["layer2", "layer3"]) as store:
            model(torch.randn(2, 3, 32, 32))
            assert store["layer3"].shape == (2, 64, 8, 8)
            raise RuntimeError("boom")
    assert same_fingerprint(before, model_fingerprint(model))


def test_frozen_restores_modes_and_flags():
    model = nets.create("resnet8").train()
    model.head.weight.requires_grad_(False)
    before = model_fingerprint(model)
    with pytest.raises(ValueError):
        with frozen(model):
            assert not model.training
            assert not any(p.requires_grad for p in model.parameters())
            raise ValueError
    assert same_fingerprint(before, model_fingerprint(model))


def test_chunk_size_respects_memory_budget(monkeypatch):
    model = nets.create("resnet8")
    x = torch.randn(1, 3, 32, 32)
    assert chunk_size(model, x, batch_size=7) == 7
    with pytest.raises(InputError):
        chunk_size(model, x, batch_size=0)
    monkeypatch.setenv("CNNLENS_MEMORY_BUDGET", str(1 << 20))  # 1 MiB: only tiny chunks fit
    small = chunk_size(model, x)
    monkeypatch.setenv("CNNLENS_MEMORY_BUDGET", str(1 << 34))
    big = chunk_size(model, x)
    assert 1 <= small < big <= 64


class _ViewsFeatureMap(nn.Module):
    """Flattens a feature map with ``.view``, which channels-last memory refuses."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.view(len(y), -1))


class _LayoutDependent(nn.Module):
    """Answers differently for channels-last inputs (as a careless custom op might)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        out = self.conv(x).mean((2, 3))
        return out if x.is_contiguous() else out + 1


@pytest.mark.parametrize(
    ("model", "fast"), [(UserNet, True), (_ViewsFeatureMap, False), (_LayoutDependent, False)]
)
def test_forward_uses_channels_last_only_when_the_model_agrees(model, fast):
    torch.manual_seed(0)
    model = model().eval()
    x = torch.randn(5, 3, 6, 6)
    with torch.no_grad():
        expected = model(x)
    got = forward(model, x)
    assert not got.requires_grad
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    found = _FAST_COPY["forward"][model][1]
    assert (found is not None) is fast
    if fast:  # a copy in channels-last memory; the user's model untouched
        copy = found.module
        weight = next(p for p in copy.parameters() if p.dim() == 4)
        assert copy is not model and weight.is_contiguous(memory_format=torch.channels_last)
        assert all(p.is_contiguous() for p in model.parameters())


def test_fast_runner_passes_the_models_gradient():
    torch.manual_seed(0)
    model = UserNet().eval()
    x = torch.randn(4, 3, 6, 6)
    run = fast_runner(model, x)
    assert run is not model  # the channels-last copy
    grads = []
    for fn in (model, run):
        v = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(v)[:, 1].sum(), v)
        grads.append(g)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_forward_follows_the_model_it_copies():
    """A weight changed in place, train mode or a hook: forward answers as the model."""
    torch.manual_seed(0)
    model = UserNet().eval()
    x = torch.randn(4, 3, 6, 6)
    forward(model, x)
    assert _FAST_COPY["forward"][model][1] is not None
    with torch.no_grad():
        model.fc.bias += 1.0
        torch.testing.assert_close(forward(model, x), model(x))
    seen = []
    handle = model.fc.register_forward_hook(lambda m, i, o: seen.append(m))
    try:
        forward(model, x)
    finally:
        handle.remove()
    assert seen == [model.fc]  # the hook saw the model itself, not a copy
    model.train()
    model.features.append(nn.Dropout(0.5))
    a, b = forward(model, x), forward(model, x)
    assert not torch.equal(a, b)  # dropout active: the model's own train-mode forward


def test_run_chunked_concatenates_in_order():
    out = run_chunked(lambda a, b: torch.arange(a, b), 10, 3)
    assert torch.equal(out, torch.arange(10))
    pair = run_chunked(lambda a, b: (torch.arange(a, b), -torch.arange(a, b)), 5, 2)
    assert torch.equal(pair[1], -torch.arange(5))
    with pytest.raises(InputError):
        run_chunked(lambda a, b: torch.zeros(0), 0, 3)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_atomic_write_uses_normal_permissions(tmp_path):
    import os

    path = write_text(tmp_path / "report.html", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_check_writable_folder_creates_nothing(tmp_path):
    assert check_writable_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InputError) as info:
        check_writable_folder(blocker / "sub")
    assert (
        str(info.value)
        == f"--out {blocker / 'sub'} cannot be created: {blocker} is a file, not a folder"
    )
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_writable_folder(blocker)

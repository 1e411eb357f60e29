"""Feature inversion (Mahendran & Vedaldi 2015) and multifaceted visualisation (Nguyen et
al. 2016) on constructed networks with known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlens.analysis import facets, invert
from cnnlens.data.base import TensorDataset
from cnnlens.errors import InputError
from cnnlens.hooks import model_fingerprint, same_fingerprint


def _identity_net(channels: int = 3, classes: int = 2) -> nn.Module:
    """Layer "0" copies its input (a 1x1 identity conv); the head sums the pooled
    channels into class 0."""
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    head = nn.Linear(channels, classes)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels)[:, :, None, None])
        head.weight.zero_()
        head.weight[0] = 1.0
        head.bias.zero_()
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def test_inverting_an_identity_layer_recovers_the_input():
    """phi(x) = x: the only minimiser of ||phi(x) - phi(x0)||^2 is x0 (threshold 0.99)."""
    model = _identity_net()
    gen = torch.Generator().manual_seed(0)
    x0 = 0.15 + 0.7 * torch.rand(2, 3, 8, 8, generator=gen)
    before = model_fingerprint(model)
    result = invert(model, x0, "0", steps=300, lr=0.1)
    assert same_fingerprint(before, model_fingerprint(model)) and not model.training
    for i in range(2):
        assert _correlation(result.pixels[i], x0[i]) > 0.99
    assert (result.error < 1e-3).all() and result.history.shape == (300, 2)
    assert (result.history[-1] < result.history[0]).all()


def test_inversion_checks_its_options():
    model = _identity_net()
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(InputError, match="steps must be an integer >= 1"):
        invert(model, x, "0", steps=0)
    with pytest.raises(InputError, match="has no parameter 'stepz'"):
        invert(model, x, "0", stepz=3)
    with pytest.raises(InputError, match="images must be"):
        invert(model, x[0], "0")


def _three_groups(per: int = 10):
    """Class-0 images of three known colours (red, green, blue), with a little noise."""
    gen = torch.Generator().manual_seed(0)
    images, groups = [], []
    for g in range(3):
        base = torch.full((per, 3, 8, 8), 0.1)
        base[:, g] = 0.9
        images.append((base + 0.03 * torch.randn(per, 3, 8, 8, generator=gen)).clamp(0, 1))
        groups += [g] * per
    data = TensorDataset(torch.cat(images), torch.zeros(3 * per, dtype=torch.long),
                         classes=["a", "b"], mean=[0.0] * 3, std=[1.0] * 3)  # fmt: skip
    return data, torch.tensor(groups)


def test_facets_find_the_known_groups_and_differ():
    data, groups = _three_groups()
    model = _identity_net()
    result = facets(model, data, 0, "0", 3, top=30, steps=20, lr=0.05)
    # each cluster is exactly one colour group of the top images
    clusters = {int(c): set(groups[result.top][result.labels == c].tolist()) for c in range(3)}
    assert sorted(len(v) for v in clusters.values()) == [1, 1, 1]
    assert set().union(*clusters.values()) == {0, 1, 2}
    # one facet per cluster: each is brightest in its own group's colour channel
    brightest = result.pixels.mean(dim=(2, 3)).argmax(1).tolist()
    assert sorted(brightest) == [0, 1, 2]
    for c in range(3):
        assert brightest[c] == next(iter(clusters[c]))
    assert result.logits.shape == (3, 2)


def test_facets_check_their_inputs():
    data, _ = _three_groups(2)
    model = _identity_net()
    with pytest.raises(InputError, match="k must be an integer >= 1"):
        facets(model, data, 0, "0", 0)
    with pytest.raises(InputError, match="need at least 9 images"):
        facets(model, data, 0, "0", 9)
    with pytest.raises(InputError, match="target must be a class index"):
        facets(model, data, 5, "0", 2)


@pytest.mark.slow
def test_inspect_invert_and_facets_commands(tmp_path, capsys):
    import json

    from cnnlens import checkpoint, nets
    from cnnlens.cli import main
    from cnnlens.data import load

    shapes = load("shapes", split="test", n=4)
    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=len(shapes.classes))
    checkpoint.save(model, tmp_path / "m", classes=shapes.classes, mean=shapes.mean,
                    std=shapes.std, input_shape=(3, 32, 32))  # fmt: skip
    base = ["--model", str(tmp_path / "m"), "--data", "shapes"]
    args = ["inspect", "invert", *base, "--layer", "layer1", "--index", "0,1", "--steps", "3"]
    assert main([*args, "--out", str(tmp_path / "inv")]) == 0
    saved = json.loads((tmp_path / "inv" / "invert.json").read_text())
    assert saved["images"] == [0, 1] and len(saved["error"]) == 2
    assert (tmp_path / "inv" / "invert.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*args, "--steps", "0", "--out", str(tmp_path / "bad")]) == 2
    assert main([*args, "--layer", "nope", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
    args = ["inspect", "maximise", *base, "--class", "circle", "--facets", "2"]
    args += ["--facet-images", "12", "--steps", "2"]
    assert main([*args, "--out", str(tmp_path / "fac")]) == 0
    saved = json.loads((tmp_path / "fac" / "facets.json").read_text())
    assert sum(saved["facets"][0]["cluster_sizes"]) == 12
    assert len(saved["facets"][0]["probability"]) == 2
    capsys.readouterr()
    assert main([*args, "--layer", "layer1", "--out", str(tmp_path / "bad2")]) == 2
    assert "--facets maximises class logits" in capsys.readouterr().err

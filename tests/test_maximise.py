"""Activation maximisation (paper 001, section 3.4) on networks whose maximising input is
known by construction, its determinism and batching, the model left as it was, errors,
the CLI, and a trained model's class logits.

Known answers: a unit that computes ``<P, x>`` of the normalised image ``x`` is maximised
over images in [0, 1] by ``x = 1`` where ``P > 0`` and ``0`` where ``P < 0``; with a
binary pattern ``P`` (values +-1) that image is an affine map of ``P``, so the result
must correlate with ``P`` (Pearson r over pixels, stated threshold 0.9) and not with
another pattern.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from cnnlens.analysis import Objective, colour_decorrelation, maximise, maximise_all
from cnnlens.analysis.visualisation.image_params import FourierImage, PixelImage
from cnnlens.errors import CnnlensError, InputError, LayerError, TargetError
from cnnlens.hooks import model_fingerprint, same_fingerprint

SHAPE = (3, 16, 16)
FAST = {"steps": 96, "jitter": 0, "image_shape": SHAPE, "seeds": (0, 1)}


def blobs(seed: int) -> torch.Tensor:
    """A binary (+-1) pattern of smooth blobs, ``SHAPE``."""
    gen = torch.Generator().manual_seed(seed)
    field = torch.randn(1, *SHAPE, generator=gen)
    smooth = torch.nn.functional.avg_pool2d(field, 5, stride=1, padding=2, count_include_pad=False)
    return torch.where(smooth[0] > 0, 1.0, -1.0)


PATTERNS = torch.stack([blobs(1), blobs(2)])


def correlation(images: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Pearson r between each image ``[S, ...]`` and ``pattern`` over all pixels, ``[S]``."""
    x = images.flatten(1) - images.flatten(1).mean(1, keepdim=True)
    p = pattern.flatten() - pattern.mean()
    return (x @ p) / (x.norm(dim=1) * p.norm()).clamp_min(1e-12)


def detector_net() -> nn.Module:
    """``detector`` unit k computes <PATTERNS[k], x>; a head turns them into 3 logits."""
    detector = nn.Linear(PATTERNS[0].numel(), len(PATTERNS), bias=False)
    with torch.no_grad():
        detector.weight.copy_(PATTERNS.flatten(1))
    torch.manual_seed(0)
    layers = OrderedDict(
        flat=nn.Flatten(), detector=detector, relu=nn.ReLU(), head=nn.Linear(len(PATTERNS), 3)
    )
    return nn.Sequential(layers).eval()


def readout_net(scale: float = 1.0) -> nn.Module:
    """Logit k = scale <PATTERNS[k], x>: the class objective's known answer."""
    head = nn.Linear(PATTERNS[0].numel(), len(PATTERNS))
    with torch.no_grad():
        head.weight.copy_(scale * PATTERNS.flatten(1))
        head.bias.zero_()
    return nn.Sequential(nn.Flatten(), head).eval()


def conv_net() -> nn.Module:
    """A 5x5 filter F (binary pattern); its neuron at (y, x) sees the window around it."""
    torch.manual_seed(0)
    layers = OrderedDict(
        conv=nn.Conv2d(3, 2, 5, padding=2, bias=False),
        relu=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(),
        head=nn.Linear(2, 3),
    )
    net = nn.Sequential(layers)
    with torch.no_grad():
        net.conv.weight.copy_(PATTERNS[:, :, :5, :5])
    return net.eval()


# --- known answers ----------------------------------------------------------------------


@pytest.mark.parametrize("parameterisation", ["pixel", "fourier"])
def test_a_channel_is_maximised_by_its_pattern(parameterisation):
    net = detector_net()
    for k in range(len(PATTERNS)):
        result = maximise(
            net, Objective.channel("detector", k), parameterisation=parameterisation, **FAST
        )
        assert result.pixels.shape == (2, *SHAPE) and result.images.shape == (2, *SHAPE)
        assert correlation(result.pixels, PATTERNS[k]).min() > 0.9
        assert correlation(result.pixels, PATTERNS[1 - k]).abs().max() < 0.5


@pytest.mark.parametrize("parameterisation", ["pixel", "fourier"])
def test_a_class_logit_is_maximised_by_its_pattern(parameterisation):
    results = maximise_all(readout_net(), [0, 1], parameterisation=parameterisation, **FAST)
    for k, result in enumerate(results):
        assert result.objective == Objective.logit(k)
        assert correlation(result.pixels, PATTERNS[k]).min() > 0.9
        assert (result.logits.argmax(1) == k).all()
        assert torch.allclose(result.final, result.logits[:, k])


def test_a_class_log_softmax_is_maximised_by_the_difference_of_the_patterns():
    """log softmax of class 0 of two logits <P0, x>, <P1, x> grows along P0 - P1: the
    pixels where the patterns differ follow P0 (the others get no gradient). The logits
    are scaled by 0.01 so the softmax does not saturate (and stop the ascent) early."""
    result = maximise(readout_net(0.01), Objective.log_softmax(0), **FAST)
    differ = PATTERNS[0] != PATTERNS[1]
    assert correlation(result.pixels[:, differ], PATTERNS[0][differ]).min() > 0.9
    assert (result.probabilities[:, 0] > 0.9).all()
    assert torch.allclose(result.final, result.logits.log_softmax(1)[:, 0], atol=1e-5)
    assert result.objective.name == "log softmax of class 0"


def test_a_negative_objective_finds_the_opposite_pattern():
    result = maximise(detector_net(), -Objective.channel("detector", 0), **FAST)
    assert correlation(result.pixels, PATTERNS[0]).max() < -0.9
    assert result.objective.name == "-detector channel 0"


def test_a_neuron_sees_the_filter_around_its_position():
    net = conv_net()
    window = PATTERNS[1, :, :5, :5]
    for position in [None, (4, 11)]:
        result = maximise(net, Objective.neuron("conv", 1, position), **FAST)
        y, x = position or (8, 8)
        seen = result.pixels[:, :, y - 2 : y + 3, x - 2 : x + 3]
        assert correlation(seen, window).min() > 0.9


def test_the_objective_grows_and_is_recorded_per_step_and_seed():
    result = maximise(
        detector_net(), Objective.channel("detector", 1), **{**FAST, "jitter": 2, "tv": 0.1}
    )
    assert result.history.shape == (FAST["steps"], 2)
    assert (result.history[-1] > result.history[0] + 10).all()
    assert (result.history[-10:].mean(0) > result.history[:10].mean(0)).all()
    # the final images (no jitter) are at least as good as the jittered ones late in the run
    assert (result.final >= result.history[-10:].min(0).values).all()


def test_images_are_the_pixels_normalised_for_the_model():
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    result = maximise(detector_net(), 0, mean=mean, std=std, **FAST)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(result.images, (result.pixels - m) / s)
    assert 0 <= float(result.pixels.min()) and float(result.pixels.max()) <= 1
    with torch.no_grad():
        assert torch.allclose(detector_net()(result.images), result.logits, atol=1e-5)
    assert result.parameters["mean"] == list(mean) and result.parameters["std"] == list(std)


def test_a_unit_dead_on_the_grey_start_moves_with_redirected_relu_gradients():
    """A ReLU unit reading ``<P, x - 0.5> - 5`` is 0 on every image near grey: no gradient,
    unless the ReLU passes the gradient that pushes its input up (Lucid's redirected ReLU)."""
    net = detector_net()
    with torch.no_grad():
        net.detector.bias = nn.Parameter(-0.5 * PATTERNS.flatten(1).sum(1) - 5.0)
    dead = maximise(net, Objective.channel("relu", 1), redirect_steps=0, **FAST)
    assert (dead.history == 0).all() and (dead.final == 0).all()
    alive = maximise(net, Objective.channel("relu", 1), **FAST)
    assert (alive.history[0] == 0).all() and (alive.final > 50).all()
    assert correlation(alive.pixels, PATTERNS[1]).min() > 0.9
    assert alive.parameters["redirect_steps"] == 16


# --- parameterisations and regularisers --------------------------------------------------


def test_blur_is_a_circular_gaussian_in_both_parameterisations():
    gens = [torch.Generator().manual_seed(3)]
    fourier = FourierImage(SHAPE, gens)
    with torch.no_grad():
        fourier.coefficients.normal_(generator=gens[0])
    pixel = PixelImage(SHAPE, [torch.Generator().manual_seed(0)])
    with torch.no_grad():
        pixel.z.copy_(fourier.raw())
    expected = ndimage.gaussian_filter(fourier.raw().detach().numpy(), (0, 0, 2, 2), mode="wrap")
    fourier.blur_(2.0)
    pixel.blur_(2.0)
    assert torch.allclose(fourier.raw(), pixel.z, atol=1e-5)
    scale = float(np.abs(expected).max())
    assert np.abs(pixel.z.detach().numpy() - expected).max() < 2e-3 * scale


def test_the_fourier_image_damps_high_frequencies():
    """Unit white noise in the coefficients: the image's spectrum falls as 1 / frequency."""
    image = FourierImage((1, 64, 64), [torch.Generator().manual_seed(0)])
    with torch.no_grad():
        image.coefficients.normal_(generator=torch.Generator().manual_seed(1))
        power = torch.fft.rfft2(image.raw()[0, 0], norm="ortho").abs()
    assert float(power[1:3, 1:3].mean()) > 8 * float(power[20:30, 20:30].mean())


def test_colour_decorrelation_is_a_square_root_of_the_colour_covariance():
    gen = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.5, 0.2], [0.0, 0.8, 0.3], [0.0, 0.0, 0.4]])
    images = torch.einsum("dc,nchw->ndhw", mix, torch.rand(20, 3, 8, 8, generator=gen))
    root = colour_decorrelation(images)
    cov = torch.cov(images.transpose(0, 1).flatten(1))
    product = root @ root.t()
    assert torch.allclose(product / product.norm(), cov / cov.norm(), atol=1e-5)
    assert float(root.norm(dim=0).max()) == pytest.approx(1.0)
    net = readout_net()
    plain = maximise(net, 0, **{**FAST, "steps": 10})
    eye = maximise(net, 0, decorrelate=torch.eye(3), **{**FAST, "steps": 10})
    assert torch.equal(eye.pixels, plain.pixels)
    rotation = torch.linalg.qr(torch.randn(3, 3, generator=gen)).Q
    result = maximise(net, 0, decorrelate=rotation, **FAST)
    assert correlation(result.pixels, PATTERNS[0]).min() > 0.9
    assert result.parameters["decorrelate"] == "matrix"


# --- determinism, batching, the model ----------------------------------------------------

ALL_ON = {"jitter": 2, "scale": (0.9, 1.1), "tv": 0.05, "blur": 0.5, "blur_every": 3}


@pytest.mark.parametrize("parameterisation", ["pixel", "fourier"])
def test_a_seed_gives_the_same_images_alone_or_in_any_batch(parameterisation):
    net = conv_net()
    options = {**FAST, **ALL_ON, "steps": 20, "parameterisation": parameterisation}
    objectives = [Objective.channel("conv", 0), 2]
    batched = maximise_all(net, objectives, **{**options, "seeds": (0, 1, 2)})
    again = maximise_all(net, objectives, **{**options, "seeds": (0, 1, 2)})
    for a, b in zip(batched, again):
        assert torch.equal(a.pixels, b.pixels) and torch.equal(a.history, b.history)
    alone = maximise(net, 2, **{**options, "seeds": (1,)})
    assert torch.allclose(alone.pixels[0], batched[1].pixels[1], atol=1e-5)
    chunked = maximise_all(net, objectives, **{**options, "seeds": (0, 1, 2), "batch_size": 2})
    for a, b in zip(batched, chunked):
        assert torch.allclose(a.pixels, b.pixels, atol=1e-5)
    assert not torch.allclose(batched[0].pixels[0], batched[0].pixels[1], atol=1e-3)


def test_the_model_is_left_as_it_was():
    conv = conv_net()
    net = nn.Sequential(conv.conv, nn.BatchNorm2d(2), nn.Dropout(0.5), *list(conv)[1:]).train()
    net[0].weight.requires_grad_(False)
    before = model_fingerprint(net)
    result = maximise(net, Objective.channel("1", 1), **{**FAST, "steps": 5})
    assert same_fingerprint(before, model_fingerprint(net))
    assert net.training and not net[1].running_mean.any()  # BN statistics untouched
    with torch.no_grad():  # the images were optimised in eval mode (no dropout)
        assert torch.allclose(net.eval()(result.images), result.logits, atol=1e-5)
    net.train()
    with pytest.raises(TargetError):
        maximise(net, Objective.channel("1", 7), **FAST)
    assert same_fingerprint(before, model_fingerprint(net))


def test_a_double_precision_model_gets_its_own_dtype():
    result = maximise(detector_net().double(), Objective.channel("detector", 0), **FAST)
    assert correlation(result.pixels, PATTERNS[0]).min() > 0.9
    assert result.logits.dtype == torch.float32 and result.pixels.dtype == torch.float32


def test_the_defaults_come_from_a_saved_model(tmp_path):
    from cnnlens import checkpoint, load, nets

    torch.manual_seed(0)
    net = nets.create("lenet5", num_classes=3)
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.15)
    folder = checkpoint.save(
        net, tmp_path / "m", classes=["a", "b", "c"], mean=mean, std=std, input_shape=(3, 32, 32)
    )
    result = maximise(load(folder), 2, steps=3, seeds=(0,))
    assert result.pixels.shape == (1, 3, 32, 32)
    assert result.parameters["mean"] == pytest.approx(mean)
    assert result.parameters["std"] == pytest.approx(std)
    assert result.parameters["jitter"] == 2  # "auto": 32 / 16


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "objective, options, error, message",
    [
        (Objective.channel("nolayer", 0), {}, LayerError, "nolayer"),
        (Objective.channel("detector", 2), {}, TargetError, "channel 2"),
        (5, {}, TargetError, "class 5"),
        (Objective.neuron("flat", 0), {}, LayerError, "spatial"),
        (0, {"steps": 0}, InputError, "steps"),
        (0, {"parameterisation": "wavelet"}, InputError, "wavelet"),
        (0, {"image_shape": None}, InputError, "image_shape"),
        (0, {"image_shape": (3, 16)}, InputError, "image_shape"),
        (0, {"seeds": ()}, InputError, "seeds"),
        (0, {"jitter": -1}, InputError, "jitter"),
        (0, {"blur": 0.0}, InputError, "blur"),
        (0, {"tv": -1.0}, InputError, "tv"),
        (0, {"scale": (1.2, 1.1)}, InputError, "scale"),
        (0, {"lr": 0}, InputError, "lr"),
        (0, {"std": (1.0, 0.0, 1.0)}, InputError, "std"),
        (0, {"mean": (0.5, 0.5)}, InputError, "mean"),
        (0, {"decorrelate": torch.eye(2)}, InputError, "decorrelate"),
        ("star", {}, InputError, "objective"),
    ],
)
def test_bad_input_raises_a_clear_error(objective, options, error, message):
    net = detector_net()
    before = model_fingerprint(net)
    with pytest.raises(error, match=message):
        maximise(net, objective, **{**FAST, **options})
    assert same_fingerprint(before, model_fingerprint(net))


def test_bad_objectives_are_refused_when_made():
    with pytest.raises(TargetError):
        Objective.logit(-1)
    with pytest.raises(TargetError):
        Objective.channel("layer1", 1.5)
    with pytest.raises(InputError):
        Objective.neuron("layer1", 0, (1, 2, 3))
    with pytest.raises(CnnlensError):
        Objective("pixel", 0)


def test_the_result_is_plain_json():
    result = maximise(detector_net(), Objective.logit(1), **{**FAST, "steps": 4})
    data = json.loads(json.dumps(result.to_dict()))
    assert data["objective"] == "class 1" and data["seeds"] == [0, 1]
    assert np.array(data["history"]).shape == (2, 4)
    assert len(data["target_probability"]) == 2 and data["parameters"]["steps"] == 4


# --- the command line ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from cnnlens import checkpoint, nets
    from cnnlens.data import load

    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=8).eval()
    shapes = load("shapes", split="test", n=16)
    folder = tmp_path_factory.mktemp("maximise-model") / "m"
    return checkpoint.save(model, folder, classes=shapes.classes, mean=shapes.mean, std=shapes.std)


def test_the_command_writes_a_grid_and_the_objective_values(saved_model, tmp_path, capsys):
    from PIL import Image

    from cnnlens.cli import main

    out = tmp_path / "mx"
    args = ["inspect", "maximise", "--model", str(saved_model), "--class", "star,0"]
    args += ["--layer", "layer3", "--channel", "1,2", "--seeds", "2", "--steps", "3"]
    assert main([*args, "--param", "pixel", "--tv", "0.5", "--out", str(out)]) == 0
    result = json.loads((out / "maximise.json").read_text())
    rows = result["objectives"]
    assert [r["name"] for r in rows] == ["star", "circle", "layer3:1", "layer3:2"]
    assert rows[0]["kind"] == "logit" and rows[0]["index"] == 4 and len(rows[0]["history"]) == 2
    assert len(rows[0]["history"][0]) == 3 and len(rows[0]["target_probability"]) == 2
    assert rows[2]["kind"] == "channel" and rows[2]["parameters"]["parameterisation"] == "pixel"
    width, height = Image.open(out / "maximise.png").size
    assert width > 4 * 128 and height > 2 * 128
    assert "probability of star" in capsys.readouterr().out
    args = ["inspect", "maximise", "--model", str(saved_model), "--class", "star", "--softmax"]
    assert main([*args, "--steps", "2", "--seeds", "1", "--out", str(tmp_path / "sm")]) == 0
    rows = json.loads((tmp_path / "sm" / "maximise.json").read_text())["objectives"]
    assert rows[0]["objective"] == "log softmax of class 4" and rows[0]["kind"] == "log_softmax"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--class", "dragon"], "dragon"),
        (["--channel", "3"], "--channel needs --layer"),
        (["--layer", "layer3"], "needs --channel"),
        (["--layer", "nolayer", "--channel", "0"], "nolayer"),
        (["--layer", "layer3", "--channel", "999"], "channel 999"),
        (["--class", "9"], "class 9"),
        (["--param", "wavelet"], "wavelet"),
        (["--scale", "a,b"], "--scale"),
    ],
)
def test_bad_command_input_is_one_line(saved_model, tmp_path, capsys, args, message):
    from cnnlens.cli import main

    base = ["inspect", "maximise", "--model", str(saved_model), "--steps", "2", "--seeds", "1"]
    code = main([*base, *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error:") and message in err and "Traceback" not in err


# --- a trained model -------------------------------------------------------------------------


@pytest.mark.slow
def test_class_images_of_a_trained_model_are_given_their_class(trained_shapes):
    """On the ResNet-20 trained on shapes (4 epochs of the demo recipe): the image that
    maximises class k's log softmax gives k more probability than the images made for the
    other classes give it (mean over them), for every class.

    No absolute probability and no comparison with the grey start: how far 128 steps get
    depends on the weights the CPU's kernels trained. "> 0.9 for every class" failed on an
    AMD EPYC (0.38, 0.04, 0.38 for circle, cross, heart), and with training seed 1 under
    ATEN_CPU_CAPABILITY=avx2 the square's image stalled at 0.102 against 0.094 on a grey
    image. That the class objectives reach their known answers is tested exactly on the
    constructed networks above.
    """
    model, test = trained_shapes.model, trained_shapes.test
    before = model_fingerprint(model)
    classes = range(test.num_classes)
    options = {"steps": 128, "seeds": (0, 1), "image_shape": (3, 32, 32)}
    options.update(mean=test.mean, std=test.std)
    softmax = maximise_all(model, [Objective.log_softmax(k) for k in classes], **options)
    assert same_fingerprint(before, model_fingerprint(model))
    # probability[i, k]: of class k on the images made for class i, mean over the seeds
    probability = torch.stack([r.probabilities.mean(0) for r in softmax])
    own = probability.diagonal()
    others = (probability.sum(0) - own) / (len(own) - 1)
    # own / others, the smallest over the classes: 17.8 (training seed 1), 862 and >= 18
    # (seed 0) under ATEN_CPU_CAPABILITY=avx2 / avx2 / default
    assert (own > others).all(), (own, others)
    # No assertion on the logit objective of a trained model: how far 128 steps raise one
    # class's logit depends on the weights the CPU trained. Measured on three trainings of
    # this recipe here, class k's own logit image beat the other classes' images for every
    # k twice, but under ATEN_CPU_CAPABILITY=default one class's stayed at -0.9 against 8.3,
    # and in one fresh `make test` a class's two seeds reached 13.0 and 1.3 against its
    # median test image's 18.2. The logit objective's known answer is tested exactly on the
    # constructed read-out networks above.
    logits = maximise_all(model, list(classes), **options)
    assert all(torch.isfinite(r.logits).all() for r in logits)
    assert same_fingerprint(before, model_fingerprint(model))


# --- the report part -------------------------------------------------------------------------


@pytest.mark.parametrize("quick", [True, False])
def test_the_report_part_follows_the_figure_rule(quick, tmp_path, monkeypatch):
    from cnnlens import nets
    from cnnlens.data import load
    from cnnlens.plotting import COLUMN_PX, MIN_MAP_PX, MIN_TEXT_PX
    from cnnlens.report import ReportContext
    from cnnlens.report.sections import internals
    from helpers import embedded_figures

    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=8).eval()
    test = load("shapes", split="test", n=16)
    ctx = ReportContext(model=model, train=None, test=test, out=tmp_path, options={"quick": quick})
    before = model_fingerprint(model)
    monkeypatch.setattr(internals, "MAXIMISE_STEPS", 4)  # the full part's settings, fewer steps
    page = internals.maximise_part(ctx, quick)
    assert same_fingerprint(before, model_fingerprint(model))
    figures = embedded_figures(page)
    assert [f["alt"] for f in figures] == ["class images", "channel images"]
    for figure in figures:
        assert figure["width"] <= COLUMN_PX and figure["text_px"] >= MIN_TEXT_PX
        assert figure["map_px"] >= MIN_MAP_PX and figure["png_size"] == (
            figure["width"],
            figure["height"],
        )
    classes = test.classes[:4] if quick else test.classes
    assert all(f"<th>{c}</th>" in page for c in classes)

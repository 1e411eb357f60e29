"""check_fits: a model and a data set that do not go together are named before any work."""

from __future__ import annotations

import json

import pytest
import torch

from cnnlens import checkpoint, nets
from cnnlens.compatibility import check_fits
from cnnlens.data import TensorDataset
from cnnlens.errors import CheckpointError, InputError


def images(n=2, c=3, size=32, classes=8) -> TensorDataset:
    x = torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8)
    y = torch.arange(n) % classes
    return TensorDataset(x, y, classes=[str(i) for i in range(classes)], name="toy")


def saved(tmp_path, model, **kwargs):
    checkpoint.save(model, tmp_path / "m", **kwargs)
    return checkpoint.load(tmp_path / "m")


def test_fitting_model_passes_and_keeps_its_mode():
    model = nets.create("resnet8", num_classes=8).train()
    model.layer1.eval()  # a submodule a user froze keeps its own mode
    check_fits(model, images(), data="toy")
    assert model.training and not model.layer1.training and model.layer2.training
    check_fits(model.eval(), images(size=48), data="toy")  # nothing recorded: any size it runs on


def test_recorded_shape_is_compared_exactly(tmp_path):
    model = saved(tmp_path, nets.create("resnet8", num_classes=8), input_shape=(3, 32, 32))
    assert model.meta["input_shape"] == [3, 32, 32]
    check_fits(model, images(), data="toy")
    with pytest.raises(InputError) as info:
        check_fits(model, images(c=1, classes=10), data="digits")
    assert (
        str(info.value) == "the model expects 3-channel 32x32 images; digits gives 1-channel 32x32"
    )
    with pytest.raises(
        InputError, match="expects 3-channel 32x32 images; toy gives 3-channel 48x48"
    ):
        check_fits(model, images(size=48), data="toy")


def test_channels_from_first_conv_without_a_record(tmp_path):
    model = saved(tmp_path, nets.create("lenet5", in_channels=1, num_classes=8))
    assert model.meta["input_shape"] is None
    with pytest.raises(InputError) as info:
        check_fits(model, images(c=3), data="shapes")
    assert str(info.value) == "the model expects 1-channel images; shapes gives 3-channel 32x32"


def test_probe_names_a_size_the_model_cannot_take():
    model = nets.create("lenet5", num_classes=8)  # its 5x5 convolutions leave 1x1 of 32x32
    with pytest.raises(InputError) as info:
        check_fits(model, images(size=20), data="folder:/x")
    message = str(info.value)
    assert message.startswith("the model does not run on the 3-channel 20x20 images of folder:/x: ")
    assert "Kernel size can't be greater than actual input size" in message  # torch's reason


def test_number_of_classes():
    with pytest.raises(InputError) as info:
        check_fits(nets.create("resnet8", num_classes=10), images(classes=8), data="shapes")
    assert str(info.value) == "the model predicts 10 classes; shapes has 8"


def test_bad_input_shape_on_save_and_load(tmp_path):
    with pytest.raises(InputError, match=r"input_shape must be three positive ints"):
        checkpoint.save(nets.create("resnet8"), tmp_path / "m", input_shape=(3, 32))
    checkpoint.save(nets.create("resnet8"), tmp_path / "m", input_shape=(3, 32, 32))
    meta_file = tmp_path / "m" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["input_shape"] = "3x32x32"  # edited by hand
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"input_shape must be \[C, H, W\]"):
        checkpoint.load(tmp_path / "m")

"""``cnnlens drib`` on a model spec (issue 30): ``drib train --model package.module:callable``
reads its data as the card says (input size, mean/std, classes by name), and the run it
writes reopens in ``drib evaluate`` with neither the user's code nor the weights file."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlens.cli import main
from cnnlens.loading.spec import card_data

MODULE = "cnnlens_drib_user_models"
CODE = """
from cnnlens import nets


def build():
    return nets.create("resnet8", num_classes=3)
"""
CLASSES = ["ant", "bee", "cat"]  # the card's classes
FOLDERS = ["bee", "cat"]  # the data holds two of them, as 32 px images
MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]


def cli(args: list[str]) -> tuple[int, str]:
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = main(args)
    return code, text.getvalue()


@pytest.fixture
def user(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{MODULE}.py").write_text(CODE)
    sys.path.insert(0, str(code))
    try:
        module = __import__(MODULE)
        torch.manual_seed(0)
        torch.save({"state_dict": module.build().state_dict()}, tmp_path / "weights.pth")
        (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        rng = np.random.default_rng(0)
        for name in FOLDERS:
            (tmp_path / "images" / name).mkdir(parents=True)
            for i in range(6):
                pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
        yield {"root": tmp_path, "code": code}
    finally:
        if str(code) in sys.path:
            sys.path.remove(str(code))
        sys.modules.pop(MODULE, None)


def test_card_data_reads_shapes_at_the_cards_size():
    """``shapes`` names its options, so the card's input size (and ``n``) reach it."""
    ds = card_data("shapes", "test", {"input_shape": [3, 16, 16], "mean": MEAN, "std": STD}, n=5)
    assert tuple(ds.image_shape) == (3, 16, 16) and len(ds) == 5
    assert tuple(ds.mean) == tuple(MEAN) and tuple(ds.std) == tuple(STD)


def test_drib_gates_a_module_spec_on_the_cards_data_and_reopens_it(user, tmp_path):
    root, out = user["root"], tmp_path / "run"
    code, output = cli(
        ["drib", "train", "--model", f"{MODULE}:build", "--weights", str(root / "weights.pth"),
         "--classes", str(root / "classes.txt"), "--input", "3,16,16",
         "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)),
         "--data", f"folder:{root / 'images'}", "--epochs", "1", "--finetune-epochs", "1",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0, output
    # the gated model and the kept ungated copy were trained and measured on the card's data:
    # 16 px (the images are 32 px), its normalisation, its classes (the folders by name)
    for folder in ("model", "ungated"):
        meta = json.loads((out / folder / "model.json").read_text())
        assert meta["input_shape"] == [3, 16, 16], folder
        assert meta["mean"] == pytest.approx(MEAN) and meta["std"] == pytest.approx(STD)
        assert meta["classes"] == CLASSES
    recorded = json.loads((out / "run.json").read_text())
    assert recorded["identity"]["model"] == f"{MODULE}:build"
    assert recorded["evaluation"]["n_test"] == 6 * len(FOLDERS)

    # reopened with nothing from outside the run: no module, no weights file
    sys.path.remove(str(user["code"]))
    sys.modules.pop(MODULE, None)
    (root / "weights.pth").unlink()
    code, output = cli(["drib", "evaluate", "--run", str(out), "--parts", "macs"])
    assert code == 0, output
    measured = json.loads((out / "evaluation.json").read_text())["macs"]
    before = recorded["evaluation"]
    assert measured["n_test"] == before["n_test"]
    for which in ("ungated", "gated"):
        assert measured[which]["accuracy"] == before[which]["accuracy"], which
        assert measured[which]["macs"] == pytest.approx(before[which]["macs"], rel=1e-9)
    assert measured["reduction_ratio"] == pytest.approx(before["reduction_ratio"], rel=1e-9)


def test_evaluate_names_a_run_whose_ungated_model_is_gone(user, tmp_path):
    """A run whose kept copy does not belong to it (another identity) and whose identity
    names no saved model is refused with one line naming the run."""
    root, out = user["root"], tmp_path / "run"
    args = ["drib", "train", "--model", f"{MODULE}:build", "--weights", str(root / "weights.pth"),
            "--input", "3,16,16", "--data", f"folder:{root / 'images'}", "--epochs", "1",
            "--finetune-epochs", "0", "--classes", str(root / "classes.txt"),
            "--out", str(out)]  # fmt: skip
    code, output = cli(args)
    assert code == 0, output
    meta_file = out / "ungated" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["extra"]["ungated_of"] = {"model": "another run"}
    meta_file.write_text(json.dumps(meta))
    code, output = cli(["drib", "evaluate", "--run", str(out), "--parts", "macs"])
    assert code == 2 and "ungated model" in output and str(out) in output, output
    assert len(output.strip().splitlines()) == 1, output

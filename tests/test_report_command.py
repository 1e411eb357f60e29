"""``cnnlens report``: the whole report for a user-style model on an ImageFolder of PNGs.

The model is the torchvision-layout ResNet-18 of ``cnnlens.nets`` (random weights, BatchNorm
statistics set), saved with ``cnnlens.save`` and its card (classes, mean, std, input size);
the data an ImageFolder of 64 px PNGs written here (224 px in the slow test).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.helpers import embedded_figures, with_bn_statistics

from cnnlens import plotting
from cnnlens.cli import main

CLASSES = ["cat", "dog", "fox"]
MEAN = [0.5, 0.45, 0.4]
STD = [0.25, 0.25, 0.25]


def write_folder(root: Path, size: int, per_class: int, *, splits=("train", "test")) -> Path:
    """An ImageFolder: ``root/<split>/<class>/<i>.png``, each class a colour of its own."""
    rng = np.random.default_rng(0)
    for split in splits:
        for k, name in enumerate(CLASSES):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
                y, x = rng.integers(0, size // 2, 2)
                image[y : y + size // 2, x : x + size // 2, k] = 255  # the class's colour
                Image.fromarray(image).save(folder / f"{i}.png")
    return root


def save_model(folder: Path, size: int, classes=CLASSES) -> Path:
    import cnnlens
    from cnnlens import nets

    torch.manual_seed(0)
    model = with_bn_statistics(nets.create("resnet18", num_classes=len(classes)))
    return cnnlens.save(
        model, folder, classes=classes, mean=MEAN, std=STD, input_shape=(3, size, size)
    )


@pytest.fixture(scope="module")
def user_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    data = write_folder(root / "images", 64, 8)
    model = save_model(root / "model", 64)
    concepts = root / "concepts"
    for name, colour in (("red", 0), ("random", None)):
        folder = concepts / name
        folder.mkdir(parents=True)
        rng = np.random.default_rng(1)
        for i in range(12 if colour is None else 5):
            image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            if colour is not None:
                image[..., colour] = 255
            Image.fromarray(image).save(folder / f"{i}.png")
    return {"root": root, "data": data, "model": model, "concepts": concepts}


class Result:
    def __init__(self, args: list[str]):
        import contextlib
        import io

        text = io.StringIO()
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            self.exit_code = main(["report", *args])
        self.output = text.getvalue()


def run(args: list[str]) -> Result:
    return Result(args)


SMALL = ["--images", "2", "--faithfulness-images", "1", "--quick"]


@pytest.fixture(scope="module")
def report_page(user_setup):
    """The report of a user's own module (``report_user_models:build``, importable from a
    folder on the path) with a ``.pth`` state dict and the card given as options."""
    import sys

    from cnnlens import checkpoint

    root = user_setup["root"]
    code = root / "code"
    code.mkdir()
    (code / "report_user_models.py").write_text(
        "from cnnlens import nets\n\n\ndef build():\n"
        "    return nets.create('resnet18', num_classes=3)\n"
    )
    saved = checkpoint.load(user_setup["model"])
    torch.save(saved.state_dict(), root / "weights.pth")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    out = root / "report"
    sys.path.insert(0, str(code))
    try:
        result = run(
            [
                "--model", "report_user_models:build", "--weights", str(root / "weights.pth"),
                "--classes", str(root / "classes.txt"), "--input", "3,64,64",
                "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)),
                "--data", f"folder:{user_setup['data']}",
                "--concepts", str(user_setup["concepts"]), "--out", str(out), *SMALL,
            ]
        )  # fmt: skip
    finally:
        sys.path.remove(str(code))
    assert result.exit_code == 0, result.output
    return (out / "report.html").read_text(encoding="utf-8")


def section_titles(page: str) -> list[str]:
    return re.findall(r'<section id="[^"]+"><h2>([^<]+)</h2>', page)


def test_report_shows_the_demo_sections_for_a_user_model(report_page):
    from cnnlens.report import registered_sections

    titles = section_titles(report_page)
    names = dict(registered_sections())
    for key in ("overview", "training", "predictions", "explanations", "faithfulness"):
        assert names[key] in titles, key
    for key in ("class-filters", "internals", "not-shown"):
        assert names[key] in titles, key
    assert 'class="error"' not in report_page  # no section failed
    assert "Concept vectors (TCAV)" in report_page  # the concept folder was used
    assert "Surrogate decision tree" in report_page  # train/ is a split of its own
    # the card's classes and input size, not a built-in data set's
    assert "cat, dog, fox" in report_page and "3x64x64" in report_page


def test_left_out_sections_are_listed_once_with_a_reason(report_page):
    from cnnlens.report import registered_sections

    names = dict(registered_sections())
    shown = section_titles(report_page)
    left = report_page.split('<section id="not-shown">', 1)[1]
    items = re.findall(r"<li><b>([^<]+)</b>: ([^<]+)</li>", left)
    listed = {what for what, _why in items}
    for key in ("object-check", "relabel", "attributes", "drib", "drib-baselines"):
        assert names[key] not in shown, key
        assert names[key] in listed, key
    assert f"{names['internals']}: network dissection" in listed  # no masks in a folder
    assert all(len(why) > 20 for _what, why in items)  # a reason, not a bare name
    assert len(listed) == len(items)  # each once


def test_every_figure_keeps_the_figure_rule(report_page):
    shown = embedded_figures(report_page)
    assert len(shown) >= 8
    for fig in shown:
        assert (fig["width"], fig["height"]) == fig["png_size"], fig["alt"]
        assert fig["width"] <= plotting.COLUMN_PX, fig["alt"]
        assert fig["text_px"] >= plotting.MIN_TEXT_PX, fig["alt"]
        if fig["map_px"] is not None:
            assert fig["map_px"] >= plotting.MIN_MAP_PX, fig["alt"]


def test_a_flat_folder_leaves_out_what_needs_a_training_split(tmp_path):
    from cnnlens.commands.report import open_data, other_split
    from cnnlens.report import registered_sections
    from cnnlens.report.model_report import NO_TRAIN, VAE_REASON, plan

    card = {"classes": CLASSES, "mean": MEAN, "std": STD, "input_shape": [3, 48, 48]}
    flat = f"folder:{write_folder(tmp_path / 'flat', 48, 2, splits=('',))}"
    split = f"folder:{write_folder(tmp_path / 'split', 48, 2)}"
    names = dict(registered_sections())
    for spec, has_train in ((flat, False), (split, True)):
        test = open_data(spec, "test", card)
        assert test.image_shape == (3, 48, 48) and test.mean == tuple(MEAN)  # the card's
        train = other_split(spec, "train", card, test)
        assert (train is not None) == has_train, spec
        only, left = plan(test, train, history=False, concepts=False, vae=False)
        assert ("class-filters" in only) == has_train
        assert ((names["class-filters"], NO_TRAIN) in left) == (not has_train)
        assert "relabel" not in only and (names["relabel"], VAE_REASON) in left


def listing(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.exists() else []


@pytest.mark.parametrize(
    "case",
    ["missing data", "classes", "model and data", "unwritable out", "card option", "concepts"],
)
def test_bad_input_exits_2_and_writes_nothing(user_setup, tmp_path, case):
    model, data = str(user_setup["model"]), f"folder:{user_setup['data']}"
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("a file of the user's")
    if case == "missing data":
        args = ["--model", model, "--data", f"folder:{tmp_path / 'nowhere'}"]
        expected = "nowhere"
    elif case == "classes":  # a model of three other classes
        args = ["--model", str(save_model(tmp_path / "m", 64, ["a", "b", "c"])), "--data", data]
        expected = "classes"
    elif case == "model and data":  # a model of 4 classes on a folder of 3
        args = ["--model", str(save_model(tmp_path / "m", 64, list("abcd"))), "--data", data]
        expected = "4 classes"
    elif case == "unwritable out":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
        args = ["--model", model, "--data", data]
        expected = "--out"
    elif case == "card option":  # a saved model carries its own card
        args = ["--model", model, "--data", data, "--input", "3,64,64"]
        expected = "drop input_shape"
    else:
        args = ["--model", model, "--data", data, "--concepts", str(tmp_path / "none")]
        expected = "--concepts"
    result = run([*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    # nothing written: the folder as it was (the unwritable one never existed)
    assert listing(out) == ([] if case == "unwritable out" else ["kept.txt"])
    assert (tmp_path / "out" / "kept.txt").read_text() == "a file of the user's"


@pytest.mark.slow
def test_224_px_resnet18_end_to_end(tmp_path):
    data = write_folder(tmp_path / "images", 224, 4)
    model = save_model(tmp_path / "model", 224)
    out = tmp_path / "report"
    result = run(
        ["--model", str(model), "--data", f"folder:{data}", "--out", str(out), *SMALL]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "3x224x224" in page
    assert 'class="error"' not in page
    for fig in embedded_figures(page):
        assert fig["width"] <= plotting.COLUMN_PX, fig["alt"]

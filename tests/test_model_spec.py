"""One model spec everywhere (issue 30, item 1): a user's own module (written here, imported
as the user would import it) with a ``.pt`` state dict and a classes file opens in explain,
evaluate, inspect, a job and the explorer's source, through the one set of card options;
an ImageFolder holding some of the model's classes is mapped to them by name; bad input is
refused before any work with one line and exit 2."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlens.cli import main

CLASSES = ["ant", "bee", "cat", "dog", "eel"]  # the model's five classes
FOLDERS = ["bee", "dog"]  # the data holds two of them
MODULE = "cnnlens_spec_user_models"
CODE = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, k=5, flat=True):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, k)
        self.flat = flat

    def forward(self, x):
        h = torch.relu(self.conv(x))
        if not self.flat:
            return h  # not logits: [N, 4, H, W]
        return self.head(h.mean((2, 3)))


def build():
    return Tiny()


def build_maps():
    return Tiny(flat=False)
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec")
    code = root / "code"
    code.mkdir()
    (code / f"{MODULE}.py").write_text(CODE)
    sys.path.insert(0, str(code))
    try:
        module = __import__(MODULE)
        torch.manual_seed(0)
        torch.save(module.build().state_dict(), root / "weights.pt")
        torch.save(module.Tiny(k=3).state_dict(), root / "other.pt")  # another head size
        (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        (root / "four.txt").write_text("\n".join(CLASSES[:4]) + "\n")
        rng = np.random.default_rng(0)
        for name in FOLDERS:
            (root / "images" / name).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "images" / name / f"{i}.png")
        (root / "strange" / "bee").mkdir(parents=True)
        (root / "strange" / "yak").mkdir(parents=True)
        for name in ("bee", "yak"):
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "strange" / name / "0.png")
        yield {"root": root, "code": code, "module": module}
    finally:
        sys.path.remove(str(code))
        sys.modules.pop(MODULE, None)


def card(user, **change) -> list[str]:
    root = user["root"]
    fields = {
        "--model": f"{MODULE}:build",
        "--weights": str(root / "weights.pt"),
        "--classes": str(root / "classes.txt"),
        "--input": "3,16,16",
        "--mean": "0.5,0.5,0.5",
        "--std": "0.25,0.25,0.25",
        **change,
    }
    return [a for k, v in fields.items() if v is not None for a in (k, v)]


def cli(args: list[str]) -> tuple[int, str]:
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = main(args)
    return code, text.getvalue()


def data(user, folder: str = "images") -> str:
    return f"folder:{user['root'] / folder}"


def test_every_model_command_has_the_same_card_options():
    import typer

    from cnnlens.cli import _register_commands, app
    from cnnlens.commands.model_spec import CARD_HELP

    _register_commands()
    root = typer.main.get_command(app)
    found = []

    def walk(group, path):
        for name, command in getattr(group, "commands", {}).items():
            walk(command, [*path, name])
        params = {p.name: p for p in getattr(group, "params", [])}
        if "model" in params:
            found.append(" ".join(path))
            assert "imported as you would import it" in params["model"].help, path
            for option, text in CARD_HELP.items():
                assert params[option].help == text, (path, option)

    walk(root, [])
    for command in ("explain", "evaluate", "report", "run", "serve", "decompose"):
        assert command in found
    assert {"inspect similarity", "inspect dissect", "drib train"} <= set(found)


def test_explain_maps_the_folders_to_the_cards_classes_by_name(user, tmp_path):
    code, output = cli(
        ["explain", *card(user), "--data", data(user), "--images", "6",
         "--methods", "saliency", "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0, output
    maps = np.load(tmp_path / "maps.npz")
    assert maps["saliency"].shape == (6, 16, 16)
    expected = [CLASSES.index(name) for name in FOLDERS for _ in range(3)]
    assert maps["labels"].tolist() == expected  # the card's indices, matched by name
    saved = json.loads((tmp_path / "explain.json").read_text())
    assert saved["model_card"]["classes"] == CLASSES


def test_evaluate_and_inspect_take_the_same_spec(user, tmp_path):
    code, output = cli(
        ["evaluate", *card(user), "--data", data(user), "--images", "4",
         "--methods", "saliency", "--metrics", "deletion", "--out", str(tmp_path / "ev")]
    )  # fmt: skip
    assert code == 0, output
    assert (tmp_path / "ev" / "metrics.csv").is_file()
    code, output = cli(
        ["inspect", "similarity", *card(user), "--data", data(user), "--images", "6",
         "--out", str(tmp_path / "sim")]
    )  # fmt: skip
    assert code == 0, output
    assert (tmp_path / "sim" / "similarity.json").is_file()


def test_the_explorer_opens_the_same_spec(user):
    from cnnlens.loading.spec import ModelSpec
    from cnnlens.server.sources import open_source

    spec = ModelSpec.from_fields(
        f"{MODULE}:build",
        {"weights": user["root"] / "weights.pt", "classes": user["root"] / "classes.txt",
         "input": "3,16,16"},
    )  # fmt: skip
    source = open_source(None, model=spec, data=data(user))
    assert source.holder.available and source.classes == CLASSES
    rows = source.predictions()
    assert [r["label"] for r in rows] == [n for n in FOLDERS for _ in range(3)]
    assert source.map("saliency", 0).shape == (16, 16)
    with pytest.raises(Exception, match="yak"):
        open_source(None, model=spec, data=data(user, "strange"))


def test_a_job_runs_a_user_module_with_its_card(user, tmp_path):
    root = user["root"]
    job = tmp_path / "job.yaml"
    job.write_text(
        f"model: {MODULE}:build\nweights: {root / 'weights.pt'}\n"
        f"classes: {root / 'classes.txt'}\ninput: 3,16,16\nmean: [0.5, 0.5, 0.5]\n"
        f"std: 0.25,0.25,0.25\ndata: {data(user)}\nstore: {tmp_path / 'store'}\n"
        "methods: [saliency]\nmetrics: [deletion]\nshard_size: 4\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(user["code"]), *sys.path])}
    env["CNNLENS_QUIET"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "cnnlens.cli", "run", str(job)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "store" / "job.json").read_text())
    assert saved["model"] == f"{MODULE}:build" and saved["classes"] == CLASSES
    assert saved["model_card"]["input"] == [3, 16, 16]
    job.write_text(job.read_text().replace("input: 3,16,16", "input: 3,x,16"))
    done = subprocess.run(
        [sys.executable, "-m", "cnnlens.cli", "run", str(job)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 2 and "job field input" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "case, message",
    [
        ("weights of another model", "head"),
        ("four class names", "4 class"),
        ("not logits", "[1, 4, 16, 16]"),
        ("folders the card lacks", "yak"),
        ("a missing weights file", "--weights"),
        ("a bad --input", "--input"),
    ],
)
def test_bad_input_is_refused_before_any_work(user, tmp_path, case, message):
    root = user["root"]
    change = {
        "weights of another model": {"--weights": str(root / "other.pt")},
        "four class names": {"--classes": str(root / "four.txt")},
        "not logits": {"--model": f"{MODULE}:build_maps", "--classes": None},
        "folders the card lacks": {},
        "a missing weights file": {"--weights": str(root / "none.pt")},
        "a bad --input": {"--input": "3,16"},
    }[case]
    folder = "strange" if case == "folders the card lacks" else "images"
    out = tmp_path / "out"
    for command in (["explain"], ["inspect", "surrogate"]):
        code, output = cli(
            [*command, *card(user, **change), "--data", data(user, folder), "--out", str(out)]
        )
        assert code == 2, output
        assert message in output and len(output.strip().splitlines()) == 1, output
        assert not out.exists()


def test_decompose_reads_the_data_as_the_card_says(user, tmp_path):
    """decompose on a module spec reads its folder as the card says: the folders (a subset
    of the card's classes) are matched by name, so the card's classes without images are
    named (paper 002 needs every class), before any file is written."""
    out = tmp_path / "dec"
    code, output = cli(
        ["decompose", *card(user), "--data", data(user), "--k1", "2", "--k2", "1",
         "--sweep-k", "1,2", "--seeds", "1", "--out", str(out)]
    )  # fmt: skip
    missing = sorted(set(CLASSES) - set(FOLDERS))
    assert code == 2 and f"class(es) {missing} have no images" in output, output
    assert not out.exists() or not any(out.iterdir())

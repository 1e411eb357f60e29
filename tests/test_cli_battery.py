"""A table of bad inputs for explain, evaluate, run, inspect and serve (issue 28).

Each row is run in-process (``cnnlens.cli.main``) and must give exit code 2, a
one-line message on stderr holding the row's fragment, no traceback, and leave
every file under the test's folder as it was (the models, a pre-existing output
folder and any output folder that did not exist: "validate, then write").
The models are untrained (cnnlens.nets + cnnlens.save); the data is ``digits``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cnnlens import checkpoint, nets
from cnnlens.cli import main


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Saved models (one fits digits, one is 3-channel), corrupt copies, job files and
    an output folder that already holds a file."""
    base = tmp_path_factory.mktemp("battery")
    torch.manual_seed(0)
    gray = nets.create("lenet5", in_channels=1, num_classes=10)
    checkpoint.save(gray, base / "gray", input_shape=(1, 32, 32))
    checkpoint.save(nets.create("resnet8", num_classes=8), base / "rgb", input_shape=(3, 32, 32))
    truncated = base / "truncated"
    checkpoint.save(gray, truncated, input_shape=(1, 32, 32))
    weights = next(truncated.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    badjson = base / "badjson"
    checkpoint.save(gray, badjson, input_shape=(1, 32, 32))
    next(p for p in badjson.glob("*.json")).write_text("{not json")
    (base / "existing").mkdir()
    (base / "existing" / "keep.txt").write_text("kept")
    (base / "file.txt").write_text("a plain file")
    jobs = {
        "job-bad-yaml.yaml": "model: [unclosed\n",
        "job-list.yaml": "- a\n- b\n",
        "job-params-int.yaml": f"model: {base / 'gray'}\nstore: {base / 'st'}\ndata: digits\n"
        "methods:\n  saliency: 5\n",
        "job-unknown-field.yaml": f"model: {base / 'gray'}\nstore: {base / 'st'}\nbogus: 1\n",
        "job-bad-param.yaml": f"model: {base / 'gray'}\nstore: {base / 'st'}\ndata: digits\n"
        "methods:\n  rise: {n_masks: -5}\n",
        "job-bad-metric.yaml": f"model: {base / 'gray'}\nstore: {base / 'st'}\ndata: digits\n"
        "metrics: [deletion]\nmetric_params:\n  deletion: {step: 0}\n",
    }
    for name, text in jobs.items():
        (base / name).write_text(text)
    return base


M, R, T, J, O, E = "{gray}", "{rgb}", "{truncated}", "{badjson}", "{out}", "{existing}"
EX = ["explain", "--model", M, "--data", "digits", "--images", "0:2", "--out", O]
EV = ["evaluate", "--model", M, "--data", "digits", "--images", "4", "--methods", "saliency"]
EV += ["--metrics", "deletion", "--out", O]
RUN = ["run", "--model", M, "--data", "digits", "--images", "4", "--methods", "saliency"]
RUN += ["--metrics", "deletion", "--store", O]
SIM = ["inspect", "similarity", "--model", M, "--data", "digits", "--images", "8", "--out", O]
SUR = ["inspect", "surrogate", "--model", M, "--data", "digits", "--images", "8", "--out", O]
TCAV = ["inspect", "tcav", "--model", M, "--data", "digits", "--images", "8", "--out", O]
DIS = ["inspect", "dissect", "--model", M, "--data", "digits", "--images", "8", "--out", O]
MAX = ["inspect", "maximise", "--model", M, "--data", "digits", "--steps", "1", "--out", O]

ROWS = [
    # explain: names, values, types, targets, fit, output, corrupt files
    (EX[:-1] + [E, "--methods", "nosuch"], "unknown attribution method 'nosuch'"),
    (EX + ["--methods", "grad-cam,nosuch"], "unknown attribution method 'nosuch'"),
    (EX + ["--methods", ","], "--methods must name at least one method"),
    (EX + ["--param", "foo=bar"], "has no hyperparameter 'foo'"),
    (EX + ["--param", "novalue"], "--param must be key=value"),
    (EX + ["--methods", "rise", "--param", "n_masks=-5"], "n_masks must be an integer >= 1"),
    (EX + ["--methods", "rise", "--param", "n_masks=abc"], "n_masks must be an integer"),
    (EX + ["--methods", "rise", "--param", "p1=1.5"], "p1 must be a number > 0 and <= 1"),
    (EX + ["--methods", "grad-cam", "--param", "layer=nosuch"], "no layer 'nosuch'"),
    (EX + ["--methods", "grad-cam", "--param", "upsample=cubic"], "upsample must be"),
    (EX + ["--methods", "saliency", "--param", "at=nosuch"], "no layer 'nosuch'"),
    (EX + ["--methods", "saliency", "--param", "batch_size=0"], "batch_size must be"),
    (EX + ["--methods", "occlusion", "--param", "window=0"], "window must be"),
    (EX + ["--methods", "extremal-perturbation", "--param", "step=0"], "step must be"),
    (EX + ["--methods", "extremal-perturbation", "--param", "area=1"], "area must be"),
    (EX + ["--methods", "lime", "--param", "segments=foo"], "segments must be"),
    (EX + ["--methods", "smoothgrad", "--param", "samples=0"], "samples must be"),
    (EX + ["--methods", "smoothgrad", "--param", "base=nosuch"], "unknown attribution method"),
    (EX + ["--methods", "integrated-gradients", "--param", "steps=true"], "steps must be"),
    (EX + ["--methods", "lrp", "--param", "rule=bogus"], "unknown LRP rule 'bogus'"),
    (EX + ["--target", "-7"], "--target must be a class index >= 0 or 'predicted'"),
    (EX + ["--target", "-1"], "--target must be a class index >= 0 or 'predicted'"),
    (EX + ["--target", "ten"], "--target must be a class index >= 0"),
    (EX + ["--target", "10"], "--target 10 is not a class of digits"),
    (EX[:6] + ["0:999", "--out", O], "images outside [0, 360)"),
    (EX[:6] + ["5,400", "--out", O], "images outside [0, 360)"),
    (EX[:6] + ["a:b", "--out", O], "--images must look like"),
    (["explain", "--model", R, "--data", "digits", "--out", O], "the model expects 3-channel"),
    (["explain", "--model", M, "--data", "nosuchdata", "--out", O], "nosuchdata"),
    (["explain", "--model", "{nomodel}", "--data", "digits", "--out", O], "nomodel"),
    (["explain", "--model", T, "--data", "digits", "--out", O], "truncated"),
    (["explain", "--model", J, "--data", "digits", "--out", O], "badjson"),
    (EX[:-1] + ["{file}"], "is a file, not a folder"),
    (EX[:-1] + ["{file}/sub"], "cannot be created"),
    # evaluate
    (EV + ["--param", "rise:n_masks=-5", "--methods", "rise"], "n_masks must be"),
    (EV + ["--param", "saliency:foo=1"], "has no hyperparameter 'foo'"),
    (EV + ["--param", "rise:n_masks=10"], "name methods that are not run: rise"),
    (EV + ["--param", "grad-cam:layer=nosuch", "--methods", "grad-cam"], "no layer 'nosuch'"),
    (EV + ["--param", "nocolon"], "--param must be method:key=value"),
    (EV + ["--batch-size", "-4"], "--batch-size must be an integer >= 1"),
    (EV + ["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (EV + ["--images", "0"], "--images must be an integer >= 1"),
    (EV + ["--images", "999"], "more than the 360 test images"),
    (EV + ["--chunk", "0"], "--chunk must be an integer >= 1"),
    (EV + ["--sanity-images", "-1"], "--sanity-images must be an integer >= 0"),
    (EV + ["--methods", "nosuch"], "unknown attribution method 'nosuch'"),
    (EV + ["--metrics", "nosuch"], "unknown metric 'nosuch'"),
    (EV[:-1] + [E, "--methods", "random", "--param", "random:x=1"], "takes no parameters"),
    (["evaluate", "--model", R, "--data", "digits", "--out", O], "the model expects 3-channel"),
    (["evaluate", "--model", T, "--data", "digits", "--out", O], "truncated"),
    (["evaluate", "--model", J, "--data", "digits", "--out", O], "badjson"),
    (EV[:-1] + ["{file}"], "is a file, not a folder"),
    # run (flags and job files)
    (RUN + ["--param", "saliency:at=nosuch"], "no layer 'nosuch'"),
    (RUN + ["--param", "saliency:foo=1"], "has no hyperparameter 'foo'"),
    (RUN + ["--param", "rise:n_masks=5"], "--param names methods the job does not run"),
    (RUN + ["--methods", "rise", "--param", "rise:n_masks=-5"], "n_masks must be"),
    (RUN + ["--methods", "grad-cam", "--param", "grad-cam:layer=nosuch"], "no layer 'nosuch'"),
    (RUN + ["--metric-param", "deletion:step=-1"], "deletion: step must be"),
    (RUN + ["--metric-param", "deletion:foo=1"], "deletion has no parameter 'foo'"),
    (RUN + ["--metric-param", "deletion:score=bits"], "score must be"),
    (RUN + ["--metric-param", "insertion:step=4"], "metrics that are not scored: insertion"),
    (RUN + ["--methods", "nosuch"], "unknown attribution method 'nosuch'"),
    (RUN + ["--metrics", "nosuch"], "unknown metric 'nosuch'"),
    (RUN + ["--engine", "spark"], "engine must be one of"),
    (RUN + ["--dtype", "int8"], "dtype must be one of"),
    (RUN + ["--compile", "maybe"], "compile must be one of"),
    (RUN[:6] + ["999"] + RUN[7:], "more than the 360 images"),
    (["run", "--model", R, "--data", "digits", "--store", O], "the model expects 3-channel"),
    (["run", "--model", T, "--data", "digits", "--store", O], "truncated"),
    (RUN[:-1] + ["{file}"], "is a file, not a folder"),
    (["run", "{root}/job-bad-yaml.yaml"], "is not valid YAML"),
    (["run", "{root}/job-list.yaml"], "must be a mapping of job fields"),
    (["run", "{root}/job-params-int.yaml"], "saliency's parameters must be a mapping"),
    (["run", "{root}/job-unknown-field.yaml"], "unknown field(s) bogus"),
    (["run", "{root}/job-bad-param.yaml"], "n_masks must be"),
    (["run", "{root}/job-bad-metric.yaml"], "deletion: step must be"),
    (["run", "{root}/nosuch.yaml"], "cannot read job file"),
    # inspect
    (SIM + ["--method", "nosuch"], "nosuch"),
    (SIM + ["--layers", "nosuch"], "nosuch"),
    (SIM + ["--images", "9999"], "more than the 360 test images"),
    (SIM[:3] + [R] + SIM[4:], "the model expects 3-channel"),
    (SIM[:3] + [T] + SIM[4:], "truncated"),
    (SIM[:-1] + ["{file}"], "is a file, not a folder"),
    (SUR + ["--images", "9999"], "more than the 360 test images"),
    (SUR[:3] + [J] + SUR[4:], "badjson"),
    (TCAV + ["--layer", "nosuch"], "nosuch"),
    (TCAV + ["--cav", "svm"], "svm"),
    (TCAV + ["--concepts", "nosuch"], "nosuch"),
    (TCAV + ["--test", "ttest"], "ttest"),
    (DIS + ["--layers", "nosuch"], "digits has no object masks"),
    (DIS + ["--rank-by", "median"], "median"),
    (MAX + ["--class", "nosuch"], "--class 'nosuch'"),
    (MAX + ["--channel", "1"], "--channel needs --layer"),
    (MAX + ["--layer", "conv1"], "needs --channel"),
    (MAX + ["--param", "wavelet"], "wavelet"),
    (MAX + ["--class", "-1"], "--class must be >= 0"),
    (MAX + ["--jitter", "x"], "--jitter 'x' is not a non-negative integer"),
    (MAX[:-1] + ["{file}"], "is a file, not a folder"),
    # serve (each refused before a server starts)
    (["serve", "{root}/nosuch"], "nosuch"),
    (["serve", "{root}/file.txt"], "file.txt"),
    (["serve", M, "--images", "0"], "--images must be at least 1"),
    (["serve", M, "--port", "70000"], "--port must be 0 .. 65535"),
    (["serve", M, "--max-upload-mb", "0"], "--max-upload-mb must be positive"),
    (["serve", M, "--host", "0.0.0.0"], "--allow-remote"),
]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            stat = path.stat()
            out[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return out


def fill(argv: list[str], root: Path, out: Path) -> list[str]:
    names = {
        "gray": root / "gray",
        "rgb": root / "rgb",
        "truncated": root / "truncated",
        "badjson": root / "badjson",
        "existing": root / "existing",
        "nomodel": root / "nomodel",
        "file": root / "file.txt",
        "root": root,
        "out": out,
    }
    return [a.format(**{k: str(v) for k, v in names.items()}) for a in argv]


@pytest.mark.parametrize("argv, fragment", ROWS, ids=[f"{i:03d}" for i in range(len(ROWS))])
def test_bad_input_exits_2_in_one_line_and_writes_nothing(root, capsys, argv, fragment):
    out = root / f"out-{ROWS.index((argv, fragment)):03d}"  # absent; must stay absent
    before = snapshot(root)
    code = main(fill(argv, root, out))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: "), err
    assert fragment in lines[0], err
    assert not out.exists()
    assert snapshot(root) == before


# --- renamed options: the old spellings work for one release, with a note ------------------


def test_old_option_spellings_still_work_with_a_note(root, tmp_path, capsys):
    """explain's --method/--index and evaluate's --n give what --methods/--images give,
    with one note on stderr naming the new spelling; giving both spellings is refused."""
    import numpy as np

    gray = str(root / "gray")
    new, old = tmp_path / "new", tmp_path / "old"
    head = ["explain", "--model", gray, "--data", "digits"]
    assert main([*head, "--images", "3:5", "--methods", "saliency", "--out", str(new)]) == 0
    capsys.readouterr()
    assert main([*head, "--index", "3:5", "--method", "saliency", "--out", str(old)]) == 0
    err = capsys.readouterr().err
    assert "--method is now --methods" in err and "--index is now --images" in err
    a, b = np.load(new / "maps.npz"), np.load(old / "maps.npz")
    assert a["indices"].tolist() == b["indices"].tolist() == [3, 4]
    assert np.array_equal(a["saliency"], b["saliency"])
    # --images N is the first N images, as in evaluate; the old --index N was image N alone
    assert main([*head, "--images", "2", "--out", str(tmp_path / "first")]) == 0
    assert np.load(tmp_path / "first" / "maps.npz")["indices"].tolist() == [0, 1]
    assert main([*head, "--index", "2", "--out", str(tmp_path / "one")]) == 0
    assert np.load(tmp_path / "one" / "maps.npz")["indices"].tolist() == [2]
    capsys.readouterr()
    both = [*head, "--images", "0:2", "--index", "0:2", "--out", str(tmp_path / "both")]
    assert main(both) == 2
    assert "give only --images" in capsys.readouterr().err
    assert not (tmp_path / "both").exists()
    ev = ["evaluate", "--model", gray, "--data", "digits", "--methods", "saliency"]
    ev += ["--metrics", "deletion"]
    assert main([*ev, "--n", "2", "--out", str(tmp_path / "ev")]) == 0
    assert "--n is now --images" in capsys.readouterr().err
    assert (tmp_path / "ev" / "metrics.csv").is_file()


def test_report_section_ids_are_hyphenated():
    from cnnlens.report import registered_sections

    keys = [key for key, _ in registered_sections()]
    assert "class-filters" in keys and "drib-baselines" in keys
    assert all("_" not in key for key in keys)

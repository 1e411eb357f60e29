"""A battery of bad inputs over the training and study commands: validate, then write.

``train``, ``train-vae``, ``decompose``, ``decompose-depth``, ``drib train|evaluate|
prune-baseline`` and ``attributes train|prune|robustness|predictability`` are run in-process
(:func:`cnnlens.cli.main`) on tiny untrained models saved by the fixture. Each row is a
command line and a fragment of the message it must print; every row must

- exit 2 (a user error, not a bug),
- print one error line on stderr, no traceback (a usage error from typer keeps its
  ``Usage:`` header above its one ``Error:`` line),
- leave every file under the fixture folder as it was (names, sizes and mtimes, before and
  after) and create none: the output folder stays absent or unchanged, and no training ran
  (no ``history.json``, ``checkpoints/`` or ``model/`` appears).

The settings of every row would start real work (training, feature collection, a study)
were the check missing, so a late check shows up as a created file.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from cnnlens import checkpoint, nets
from cnnlens.cli import main

# (saved name, architecture, kwargs, recorded input shape)
MODELS = {
    "rgb": ("resnet8", {"num_classes": 8}, (3, 32, 32)),  # shapes
    "rgb10": ("resnet8", {"num_classes": 10}, (3, 32, 32)),  # 3 channels, digits' classes
    "gray": ("lenet5", {"in_channels": 1, "num_classes": 10}, (1, 32, 32)),  # digits
}


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _pickle(path) -> None:
    torch.save({"weight": torch.zeros(3)}, path)  # a pickle under a .safetensors name


def _save_models(root) -> None:
    for name, (arch, kwargs, shape) in MODELS.items():
        torch.manual_seed(0)
        checkpoint.save(nets.create(arch, **kwargs), root / name, input_shape=shape)
    for name, spoil in (("truncated", _truncate), ("pickled", _pickle)):
        shutil.copytree(root / "gray", root / name)
        spoil(root / name / "model.safetensors")
    shutil.copytree(root / "gray", root / "badjson")
    (root / "badjson" / "model.json").write_text("{not json")
    (root / "file.txt").write_text("not a folder")


def _run_record(folder, identity: dict, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps({"identity": identity, **extra}))


def _save_training_runs(root) -> None:
    """Run folders a second command would reuse: other settings, broken records, checkpoints."""
    from cnnlens.train.classifier import classifier_identity, demo_config

    other = classifier_identity("digits", "lenet5", demo_config("lenet5", epochs=5))
    _run_record(root / "trainrun", other)
    shutil.copytree(root / "gray", root / "trainrun" / "model")
    (root / "brokenrun").mkdir()
    (root / "brokenrun" / "run.json").write_text("{truncated")
    _run_record(root / "depth" / "resnet8", {**other, "arch": "resnet8"})
    _run_record(root / "vae", {"kind": "conv-vae", "data": "digits", "width": 99})
    for name, spoil in (("resume-truncated", _truncate), ("resume-pickled", _pickle)):
        epoch = root / name / "checkpoints" / "epoch-0001"
        epoch.mkdir(parents=True)
        (root / name / "checkpoints" / "latest.json").write_text(
            json.dumps({"epoch": 1, "folder": "epoch-0001"})
        )
        (epoch / "state.json").write_text(json.dumps({"epoch": 1, "history": []}))
        shutil.copy(root / "gray" / "model.safetensors", epoch / "model.safetensors")
        spoil(epoch / "model.safetensors")


def _save_gated_run(root) -> None:
    from cnnlens.data import load
    from cnnlens.studies.drib.gate import gate
    from cnnlens.studies.drib.runs import save_gated

    base = checkpoint.load(root / "rgb")
    save_gated(gate(base, masks=2), root / "drib" / "model", data=load("shapes", "test", n=2))
    _run_record(root / "drib", {"model": str(root / "rgb"), "data": "shapes"})
    shutil.copytree(root / "drib", root / "drib-badrun")
    (root / "drib-badrun" / "run.json").write_text("[1, 2")
    shutil.copytree(root / "drib", root / "drib-noidentity")
    (root / "drib-noidentity" / "run.json").write_text(json.dumps({"identity": [1]}))
    (root / "drib-norun").mkdir()


ATTR_SETTINGS = {"data": "shapes", "size": 16, "n_train": 8, "n_test": 8}


def _save_attribute_runs(root) -> None:
    from cnnlens.studies.channel_roles.training import (
        build_network,
        default_config,
        load_splits,
        save_attribute_network,
    )

    train, _test = load_splits("shapes", size=16, n_train=8, n_test=8)
    torch.manual_seed(0)
    net = build_network(train)
    # what `attributes train --data shapes --size 16 --n-train 8 --n-test 8 --epochs 1` records
    identity = {
        "kind": "attention",
        **ATTR_SETTINGS,
        "lambda": 1e-5,
        "reduction": "sum",
        "config": default_config(1, 0).to_dict(),
    }
    accuracy = {name: 0.5 for name in net.attribute_names}
    for name in ("attr", "attr-corrupt"):
        save_attribute_network(net, root / name / "model", train)
        _run_record(root / name, json.loads(json.dumps(identity)), accuracy=accuracy)
    _truncate(root / "attr-corrupt" / "model" / "model.safetensors")
    (root / "attr-badrun").mkdir()
    shutil.copytree(root / "attr" / "model", root / "attr-badrun" / "model")
    _run_record(root / "attr-badrun", {"data": "shapes"}, accuracy=accuracy)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("battery")
    _save_models(folder)
    _save_training_runs(folder)
    _save_gated_run(folder)
    _save_attribute_runs(folder)
    return folder


G, R = "--data digits", "--data digits --arch lenet5"  # cheap data for the rows
FILE_OUT = "--out {r}/file.txt/sub"
ATTR_TRAIN = "attributes train --data shapes --size 16 --n-train 8 --n-test 8"

ROWS = [  # (command line with {r} for the fixture folder, a fragment of the message)
    # --- train ---
    (f"train {G} --arch nosuch --out {{r}}/o", "unknown architecture 'nosuch'"),
    (f"train {G} --arch resnet8x --out {{r}}/o", "did you mean"),
    (f"train {G} --arch conv-vae --out {{r}}/o", "is not a classifier"),
    ("train --data nosuch --arch lenet5 --out {r}/o", "unknown data set 'nosuch'"),
    (f"train {R} --optimizer foo --out {{r}}/o", "optimizer must be one of"),
    (f"train {R} --schedule foo --out {{r}}/o", "schedule must be one of"),
    (f"train {R} --augment rotate --out {{r}}/o", "unknown augmentation"),
    (f"train {R} --lr -1 --out {{r}}/o", "learning rate must be > 0"),
    (f"train {R} --weight-decay -1 --out {{r}}/o", "weight decay must be >= 0"),
    (f"train {R} --patience -3 --out {{r}}/o", "Invalid value for '--patience'"),
    (f"train {R} --epochs 0 --out {{r}}/o", "Invalid value for '--epochs'"),
    (f"train {R} --epochs many --out {{r}}/o", "Invalid value for '--epochs'"),
    (f"train {R} --batch-size 0 --out {{r}}/o", "Invalid value for '--batch-size'"),
    (f"train {R} {FILE_OUT}", "{r}/file.txt is a file, not a folder"),
    (f"train {R} --out {{r}}/trainrun", "holds a run with other settings (config.epochs)"),
    (f"train {R} --out {{r}}/brokenrun", "run.json cannot be read"),
    (f"train {R} --resume --out {{r}}/resume-truncated", "cannot resume from"),
    (f"train {R} --resume --out {{r}}/resume-pickled", "cannot resume from"),
    (f"train {G} --arch resnet8 --epochs 1 --out {{r}}/trainrun", "other settings (arch, config"),
    # --- train-vae ---
    (f"train-vae {G} --epochs 0 --out {{r}}/o", "--epochs must be >= 1 (or 'auto'), got 0"),
    (f"train-vae {G} --epochs -2 --out {{r}}/o", "--epochs must be >= 1"),
    (f"train-vae {G} --epochs many --out {{r}}/o", "a positive integer or 'auto'"),
    (f"train-vae {G} --latent 0 --out {{r}}/o", "Invalid value for '--latent'"),
    (f"train-vae {G} --width 0 --out {{r}}/o", "Invalid value for '--width'"),
    ("train-vae --data nosuch --out {r}/o", "unknown data set 'nosuch'"),
    (f"train-vae {G} {FILE_OUT}", "is a file, not a folder"),
    (f"train-vae {G} --out {{r}}/vae", "holds a run with other settings"),
    # --- decompose ---
    (f"decompose --model {{r}}/gray {G} --k1 9999 --out {{r}}/o", "feature width m=84"),
    (f"decompose --model {{r}}/gray {G} --sweep-k 0,-3 --out {{r}}/o", "got [0, -3]"),
    (f"decompose --model {{r}}/gray {G} --sweep-k 2,85 --out {{r}}/o", "got [85]"),
    (f"decompose --model {{r}}/gray {G} --sweep-k a,b --out {{r}}/o", "comma list of integers"),
    (f"decompose --model {{r}}/gray {G} --k1 coverage --coverage 1.5 --out {{r}}/o", "coverage"),
    (f"decompose --model {{r}}/gray {G} --k1 0 --out {{r}}/o", "k1 must be an integer >= 1"),
    (
        f"decompose --model {{r}}/gray {G} --by foo --out {{r}}/o",
        "by must be 'label' or 'predicted'",
    ),
    (f"decompose --model {{r}}/gray {G} --seeds 0 --out {{r}}/o", "Invalid value for '--seeds'"),
    (f"decompose --model {{r}}/rgb {G} --out {{r}}/o", "the model expects 3-channel 32x32"),
    (f"decompose --model {{r}}/truncated {G} --out {{r}}/o", "does not match the checksum"),
    (f"decompose --model {{r}}/pickled {G} --out {{r}}/o", "does not match the checksum"),
    (f"decompose --model {{r}}/badjson {G} --out {{r}}/o", "model.json"),
    (f"decompose --model {{r}}/nosuch {G} --out {{r}}/o", "no saved model in"),
    (f"decompose --model {{r}}/gray {G} {FILE_OUT}", "is a file, not a folder"),
    # --- decompose-depth ---
    ("decompose-depth --depths 8 --ratio 5 --out {r}/o", "ratio must lie in (0, 1]"),
    ("decompose-depth --depths 8 --ratio -1 --out {r}/o", "got -1.0"),
    ("decompose-depth --depths 8 --ratio 0 --out {r}/o", "ratio must lie in (0, 1]"),
    ("decompose-depth --depths 8,9 --out {r}/o", "no CIFAR ResNet of depth [9]"),
    ("decompose-depth --depths 8,x --out {r}/o", "--depths must be a comma list"),
    ("decompose-depth --depths 8 --images 0 --out {r}/o", "Invalid value for '--images'"),
    ("decompose-depth --depths 8 --images 999999 --out {r}/o", "(10000 images)"),
    ("decompose-depth --depths 8 --epochs 0 --out {r}/o", "Invalid value for '--epochs'"),
    ("decompose-depth --depths 8 " + FILE_OUT, "is a file, not a folder"),
    ("decompose-depth --depths 8 --epochs 1 --out {r}/depth", "other settings"),
    # --- drib train ---
    ("drib train --arch lenet5 --out {r}/o", "gate() knows cnnlens' CIFAR ResNet and VGG"),
    ("drib train --arch nosuch --out {r}/o", "unknown architecture 'nosuch'"),
    ("drib train --model {r}/rgb10 --data digits --out {r}/o", "the model expects 3-channel"),
    ("drib train --model {r}/gray --data digits --out {r}/o", "not LeNet5"),
    ("drib train --n-train 999999 --out {r}/o", "(10000 images)"),
    ("drib train --n-test 3000 --out {r}/o", "test split of shapes holds (2000 images)"),
    ("drib train --penalty foo --out {r}/o", "penalty must be one of"),
    ("drib train --tau 0 --out {r}/o", "tau must be > 0"),
    ("drib train --masks 0 --out {r}/o", "Invalid value for '--masks'"),
    ("drib train --model {r}/truncated --data digits --out {r}/o", "does not match the checksum"),
    ("drib train " + FILE_OUT, "is a file, not a folder"),
    (
        "drib train --model {r}/rgb --n-train 16 --n-test 16 --out {r}/drib",
        "holds a run with other settings",
    ),
    # --- drib evaluate ---
    ("drib evaluate --run {r}/drib-badrun --out {r}/o", "is not a readable run record"),
    ("drib evaluate --run {r}/drib-noidentity --out {r}/o", "records no identity"),
    ("drib evaluate --run {r}/drib-norun --out {r}/o", "no run.json in"),
    ("drib evaluate --run {r}/drib --data digits --out {r}/o", "the model expects 3-channel"),
    ("drib evaluate --run {r}/drib --n-test 999999 --out {r}/o", "(2000 images)"),
    ("drib evaluate --run {r}/drib --n-test 3000 --out {r}/o", "--n-test 3000 is more than"),
    ("drib evaluate --run {r}/drib --parts macs,foo --out {r}/o", "--parts takes a comma list"),
    ("drib evaluate --run {r}/drib " + FILE_OUT, "is a file, not a folder"),
    # --- drib prune-baseline ---
    (
        f"drib prune-baseline --model {{r}}/gray {G} --method foo --out {{r}}/o",
        "--method takes a comma list",
    ),
    (
        f"drib prune-baseline --model {{r}}/gray {G} --macs 1 --reduction 5 --out {{r}}/o",
        "not both",
    ),
    (f"drib prune-baseline --model {{r}}/gray {G} --reduction 150 --out {{r}}/o", "(0, 100)"),
    (f"drib prune-baseline --model {{r}}/gray {G} --macs 1e6 --out {{r}}/o", "MAC target"),
    (f"drib prune-baseline --model {{r}}/gray {G} --ignore nosuch --out {{r}}/o", "nosuch"),
    (f"drib prune-baseline --model {{r}}/gray {G} --n-train 99999 --out {{r}}/o", "(1437 images)"),
    (f"drib prune-baseline --model {{r}}/gray {G} --n-test 361 --out {{r}}/o", "(360 images)"),
    (f"drib prune-baseline --model {{r}}/rgb {G} --out {{r}}/o", "the model expects 3-channel"),
    (f"drib prune-baseline --model {{r}}/gray {G} --lr 0 --out {{r}}/o", "--lr must be > 0"),
    (f"drib prune-baseline --model {{r}}/gray {G} --lambda -1 --out {{r}}/o", "'--lambda'"),
    (f"drib prune-baseline --model {{r}}/gray {G} {FILE_OUT}", "is a file, not a folder"),
    # --- attributes train ---
    ("attributes train --data digits --size 16 --out {r}/o", "attributes"),
    (f"{ATTR_TRAIN} --reduction foo --out {{r}}/o", "reduction must be one of"),
    ("attributes train --n-train 999999 --out {r}/o", "(10000 images)"),
    ("attributes train --size 4 --out {r}/o", "Invalid value for '--size'"),
    (f"{ATTR_TRAIN} --epochs 2 --out {{r}}/attr", "other settings (config.epochs"),
    (f"{ATTR_TRAIN} --epochs 1 --out {{r}}/attr-corrupt", "cannot be read"),
    (f"{ATTR_TRAIN} {FILE_OUT}", "is a file, not a folder"),
    # --- attributes prune / robustness / predictability ---
    ("attributes prune --run {r}/attr --save 5", "pruned fractions must lie in (0, 1)"),
    ("attributes prune --run {r}/attr --prefer foo", "--prefer must be one of"),
    ("attributes prune --run {r}/attr --fractions 0.5,2", "got [2.0]"),
    (
        "attributes prune --run {r}/attr --images 999999",
        "--images 999999 is more than the 8 images",
    ),
    ("attributes prune --run {r}/nosuch --out {r}/o", "is not an attribute-network run"),
    ("attributes prune --run {r}/attr-badrun", "is not a run record"),
    ("attributes prune --run {r}/attr " + FILE_OUT, "is a file, not a folder"),
    ("attributes robustness --run {r}/attr --transforms 0:0", "needs n > 0"),
    ("attributes robustness --run {r}/attr --stds 0,-1", "noise stds must be >= 0"),
    ("attributes robustness --run {r}/attr --images 999999", "is more than the 8 images"),
    ("attributes predictability --run {r}/attr --sizes 0", "edit sizes must lie in [1, 128)"),
    ("attributes predictability --run {r}/attr --sizes 8,999", "got [999]"),
    ("attributes predictability --run {r}/attr --sizes 8.5", "comma list of integers"),
    ("attributes predictability --run {r}/attr --images 999999", "is more than the 8 images"),
]


def _snapshot(folder) -> dict:
    """Every file and folder under ``folder``: files with (size, mtime), folders by name."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), folder)] = "dir"
        for name in filenames:
            stat = os.stat(os.path.join(dirpath, name))
            found[os.path.relpath(os.path.join(dirpath, name), folder)] = (
                stat.st_size,
                stat.st_mtime_ns,
            )
    return found


@pytest.mark.parametrize("line, fragment", ROWS, ids=[line for line, _ in ROWS])
def test_bad_input_is_refused_before_any_file_is_written(root, capsys, line, fragment):
    argv = line.replace("{r}", str(root)).split()
    before = _snapshot(root)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "Error:"))]
    if lines[0].startswith("Usage:"):  # typer's usage error: its header, then one error line
        assert len(errors) == 1 and errors[0] == lines[-1], err
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment.replace("{r}", str(root)) in err, err
    after = _snapshot(root)
    assert after == before, sorted(set(after.items()) ^ set(before.items()))


def test_the_battery_covers_every_training_and_study_command():
    """At least 50 rows, and every command and subcommand of this battery has rows."""
    commands = {
        "train ",
        "train-vae",
        "decompose ",
        "decompose-depth",
        "drib train",
        "drib evaluate",
        "drib prune-baseline",
        "attributes train",
        "attributes prune",
        "attributes robustness",
        "attributes predictability",
    }
    assert len(ROWS) >= 50
    for command in commands:
        assert sum(line.startswith(command) for line, _ in ROWS) >= 3, command

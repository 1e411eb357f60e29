"""Bad input on every command, run as a user runs it (a subprocess): never a traceback.

Bad input -> ``error: ...`` in one line, exit 2; a usage error -> typer's usage
message, exit 2; any other exception -> one line with its type, exit 1, and
the traceback only with ``--debug`` / ``CNNLENS_DEBUG=1``. The cases are cheap:
untrained models and the small ``digits`` data set, nothing is trained.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from cnnlens import checkpoint, nets

# (saved name, architecture, kwargs, record the input shape?)
MODELS = {
    "rgb": ("resnet8", {"num_classes": 8}, True),
    "rgb-bare": ("resnet8", {"num_classes": 8}, False),
    "gray8": ("lenet5", {"in_channels": 1, "num_classes": 8}, False),
    "gray": ("lenet5", {"in_channels": 1, "num_classes": 10}, True),  # fits digits
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Saved untrained models, and a plain file that no --out can be created under."""
    root = tmp_path_factory.mktemp("cli-errors")
    for name, (arch, kwargs, record) in MODELS.items():
        torch.manual_seed(0)
        model = nets.create(arch, **kwargs)
        shape = (kwargs.get("in_channels", 3), 32, 32) if record else None
        checkpoint.save(model, root / name, input_shape=shape)
    (root / "file.txt").write_text("not a folder")
    return root


def cnnlens(*args: str, env: dict | None = None, script: str | None = None):
    """Run ``python -m cnnlens.cli ARGS`` (or ``python -c SCRIPT ARGS``) like a shell would."""
    head = ["-c", script] if script else ["-m", "cnnlens.cli"]
    return subprocess.run(
        [sys.executable, *head, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def assert_no_traceback(proc):
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "click" not in proc.stderr, proc.stderr


USAGE = [  # one per command, covering unknown options, missing values and bad types
    # (arguments, typer's message, the usage line it starts with; None: typer gives none)
    (["demo", "--no-such-option"], "No such option: --no-such-option", "demo"),
    (["train", "--epochs", "many", "--out", "x"], "Invalid value for '--epochs'", "train"),
    (["explain", "--model"], "Option '--model' requires an argument", None),
    (
        ["evaluate", "--model", "m", "--out", "o", "--images", "abc"],
        "Invalid value for '--images'",
        "evaluate",
    ),
    (["decompose", "--data", "digits"], "Missing option '--model'", "decompose"),
    (["decompose-depth", "--ratio", "x"], "Invalid value for '--ratio'", "decompose-depth"),
    (["nets", "--no-such-option"], "No such option: --no-such-option", "nets"),
    (["datasets", "extra"], "Got unexpected extra argument(s) (extra)", "datasets"),
    (["nosuchcommand"], "No such command 'nosuchcommand'", "[OPTIONS] COMMAND"),
]


@pytest.mark.parametrize("args, message, usage", USAGE, ids=[" ".join(a) for a, *_ in USAGE])
def test_usage_errors_show_typer_usage_exit_2(args, message, usage):
    proc = cnnlens(*args)
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc)
    assert f"Error: {message}" in proc.stderr
    if usage is not None:
        assert proc.stderr.startswith(f"Usage: cnnlens {usage}"), proc.stderr


BAD_INPUT = [  # (command line with {f}/{m:NAME} placeholders, the one line printed)
    pytest.param(
        "explain --model {m:rgb} --data digits --images 0:2 --out {f}/x",
        "error: the model expects 3-channel 32x32 images; digits gives 1-channel 32x32",
        id="explain: channels vs the recorded shape",
    ),
    pytest.param(
        "evaluate --model {m:rgb-bare} --data digits --images 2 --out {f}/x",
        "error: the model expects 3-channel images; digits gives 1-channel 32x32",
        id="evaluate: channels vs the first conv",
    ),
    pytest.param(
        "decompose --model {m:gray8} --data digits --out {f}/x",
        "error: the model predicts 8 classes; digits has 10",
        id="decompose: number of classes",
    ),
    pytest.param(
        "explain --model {m:gray} --data digits --images 0:2 --device nosuch --out {f}/x",
        "error: device 'nosuch' is not usable here: Expected one of cpu, cuda,",
        id="explain: unknown device",
    ),
    *[  # --out under a file, on every command that writes; one stays in the quick run
        pytest.param(
            f"{command} --out {{f}}/file.txt/sub",
            "error: --out {f}/file.txt/sub cannot be created: {f}/file.txt is a file, not a folder",
            marks=() if command.startswith("explain") else pytest.mark.slow,
            id=f"{command.split()[0]} --out under a file",
        )
        for command in (
            "demo",
            "train --data digits",
            "explain --model {m:gray} --data digits --images 0:2",
            "evaluate --model {m:gray} --data digits --images 2",
            "decompose --model {m:gray} --data digits",
            "decompose-depth --data digits",
        )
    ],
]


def _fill(text: str, root) -> str:
    for name in MODELS:
        text = text.replace(f"{{m:{name}}}", str(root / name))
    return text.replace("{f}", str(root))


@pytest.mark.parametrize("line, message", BAD_INPUT)
def test_bad_input_is_one_named_line_exit_2(folder, line, message):
    proc = cnnlens(*_fill(line, folder).split())
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc)
    assert proc.stderr.startswith(_fill(message, folder)), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (folder / "x").exists()  # stopped before any work, nothing written


# A command that fails with an exception cnnlens did not foresee (fault injection:
# the real CLI entry point and error path, with one extra command added to it).
FAILING = """
import sys
from cnnlens import cli

@cli.app.command()
def boom() -> None:
    raise ZeroDivisionError("an injected failure")

raise SystemExit(cli.main(sys.argv[1:]))
"""


def test_unexpected_exception_is_one_line_exit_1():
    proc = cnnlens("boom", script=FAILING)
    assert proc.returncode == 1, proc.stderr
    assert_no_traceback(proc)
    assert proc.stderr.strip() == (
        "error: ZeroDivisionError: an injected failure (cnnlens --debug ... shows the traceback)"
    )


@pytest.mark.parametrize("how", ["--debug", "CNNLENS_DEBUG=1"])
def test_debug_shows_the_traceback(how):
    args, env = (
        (["--debug", "boom"], None) if how == "--debug" else (["boom"], {"CNNLENS_DEBUG": "1"})
    )
    proc = cnnlens(*args, env=env, script=FAILING)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "line 7, in boom" in proc.stderr  # the frame that raised
    assert proc.stderr.strip().splitlines()[-1] == "error: ZeroDivisionError: an injected failure"

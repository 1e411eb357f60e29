"""Shared by the job tests: a small saved model, a job, store comparison, kill helpers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import cnnlens.store

ROOT = Path(__file__).resolve().parents[1]


def save_small_model(folder: Path) -> Path:
    import torch

    import cnnlens
    from cnnlens import data, nets

    test = data.load("shapes", split="test")
    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=test.num_classes).eval()
    return cnnlens.save(
        model,
        folder,
        classes=test.classes,
        mean=test.mean,
        std=test.std,
        input_shape=test.image_shape,
    )


def job_fields(model: Path, store: Path, **over) -> dict:
    fields = {
        "model": str(model),
        "store": str(store),
        "data": "shapes",
        "images": 24,
        "shard_size": 2,
        "methods": {"saliency": {}, "grad-cam": {"layer": "auto"}, "random": {}},
        "metrics": ["deletion", "pointing-game"],
        "threads": 1,
        "progress": False,
    }
    fields.update(over)
    return fields


def write_yaml(path: Path, fields: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def cli(*args: str, **popen) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("CNNLENS_QUIET", None)  # the tests read the driver's log lines
    return subprocess.Popen(
        [sys.executable, "-m", "cnnlens.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finished_shards(store: Path) -> int:
    try:
        return len(json.loads((store / "manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def wait_for_shards(proc: subprocess.Popen, store: Path, count: int, timeout: float = 120) -> int:
    """Poll until ``count`` shards are finished (or the process ended); the count seen."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        done = finished_shards(store)
        if done >= count:
            return done
        time.sleep(0.005)
    return finished_shards(store)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def worker_pids(pid: int) -> list[int]:
    """Worker processes of a local-engine driver (spawned pool processes)."""
    out = []
    for child in children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"spawn_main" in cmd:
            out.append(child)
    return out


def pool_pids(pid: int) -> dict[str, list[int]]:
    """A local-engine driver's pool: its ``workers`` and the multiprocessing
    ``tracker`` (resource tracker) the spawn context started."""
    out: dict[str, list[int]] = {"workers": [], "tracker": []}
    for child in children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            out["workers"].append(child)
        elif b"resource_tracker" in cmd:
            out["tracker"].append(child)
    return out


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), ``None`` once it is gone or a
    zombie: with the pid, it names one process even if the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return None if fields[0] in ("Z", "X") else int(fields[19])


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def assert_same_store(a: Path, b: Path) -> None:
    """Two stores hold the same results, bit for bit, every image finished once."""
    sa, sb = cnnlens.store.open(a), cnnlens.store.open(b)
    n = sa.n_images
    assert sa.finished.tolist() == list(range(n)) == sb.finished.tolist()
    for method in sa.methods:
        ma, mb = sa.maps(method, range(n)), sb.maps(method, range(n))
        assert ma.tobytes() == mb.tobytes(), method
    assert np.array_equal(
        zarr.open_array(a / "images.zarr")[:], zarr.open_array(b / "images.zarr")[:]
    )
    ca, cb = (
        zarr.open_group(a / "curves.zarr", mode="r"),
        zarr.open_group(b / "curves.zarr", mode="r"),
    )
    names_a = sorted(name for name, _ in ca.arrays()) + sorted(
        f"{g}/{name}" for g, grp in ca.groups() for name, _ in grp.arrays()
    )
    names_b = sorted(name for name, _ in cb.arrays()) + sorted(
        f"{g}/{name}" for g, grp in cb.groups() for name, _ in grp.arrays()
    )
    assert names_a == names_b and names_a
    for name in names_a:
        assert ca[name][:].tobytes() == cb[name][:].tobytes(), name
    ta, tb = sa.metrics_table(), sb.metrics_table()
    assert not ta.duplicated(["image", "method", "metric"]).any()
    assert ta.equals(tb)
    assert sa.predictions().equals(sb.predictions())
    assert len(sa.predictions()) == n


@pytest.fixture(scope="session", name="small_model")
def small_model_fixture(tmp_path_factory):
    return save_small_model(tmp_path_factory.mktemp("jobs") / "model")


@pytest.fixture(scope="session", name="reference")
def reference_fixture(small_model, tmp_path_factory):
    """The uninterrupted run of :func:`job_fields` (this process, one worker)."""
    import cnnlens.jobs

    store = tmp_path_factory.mktemp("jobs-ref") / "store"
    result = cnnlens.jobs.run(**job_fields(small_model, store))
    assert result.ran == list(range(12)) and result.skipped == []
    return store


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def ray_actor_pids(root: int | None = None, name: bytes = b"MapWorker") -> list[int]:
    """Ray Data's map actor processes under ``root`` (default: this process, which
    started the local cluster; a cluster someone else runs is left alone)."""
    out = []
    for pid in descendants(os.getpid() if root is None else root):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"ray::") and name in cmd:
            out.append(pid)
    return out

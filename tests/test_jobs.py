"""Jobs on the local engine: validation before any work, resume after a SIGKILL of the
driver or of one worker equal to an uninterrupted run bit for bit, refusal to mix, no
worker outliving a killed driver."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

import cnnlens.jobs
import cnnlens.store
from cnnlens.cli import main
from cnnlens.errors import ConfigError
from jobs_helpers import (  # noqa: F401  (fixtures)
    assert_same_store,
    cli,
    job_fields,
    kill,
    pool_pids,
    reference_fixture,
    small_model_fixture,
    start_time,
    wait_for_shards,
    worker_pids,
    write_yaml,
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": {"saliency": {}, "grad-camm": {}}}, "unknown attribution method 'grad-camm'"),
        ({"methods": {"rise": {"n_maks": 10}}}, "rise has no hyperparameter 'n_maks'"),
        ({"metrics": ["deletion", "delection"]}, "unknown metric 'delection'"),
        ({"data": "shapes-nope"}, "unknown data set 'shapes-nope'"),
        ({"data": "folder:/nonexistent/images"}, "/nonexistent/images"),
        ({"images": 5000}, "more than the 2000 images"),
        ({"engine": "spark"}, "engine must be one of local, ray"),
        ({"shard_size": 0}, "shard_size must be a positive integer"),
        ({"colour": "blue"}, "unknown field(s) colour"),
        ({"store": "STORE_IS_A_FILE"}, "is a file, not a folder"),
    ],
)
def test_validation_errors_before_any_work(tmp_path, small_model, change, message, capsys):
    (tmp_path / "file").write_text("x")
    fields = {**job_fields(small_model, tmp_path / "store"), **change}
    if fields["store"] == "STORE_IS_A_FILE":
        fields["store"] = str(tmp_path / "file")
    code = main(["run", str(write_yaml(tmp_path / "job.yaml", fields))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "store").exists()  # nothing started


def test_flags_without_yaml_and_bad_yaml(tmp_path, small_model, capsys):
    store = str(tmp_path / "s")
    flags = ["--images", "2", "--methods", "saliency", "--metrics", "deletion"]
    code = main(
        ["run", "--model", str(small_model), "--store", store, *flags, "--param", "lrp:a=1"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--param names methods the job does not run: lrp" in err, err
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    assert main(["run", str(tmp_path / "bad.yaml")]) == 2
    assert "is not valid YAML" in capsys.readouterr().err
    assert main(["run", "--model", str(small_model), "--store", store, *flags]) == 0
    out = capsys.readouterr().out
    assert "| saliency | deletion |" in out and "1 shard(s) run, 0 finished before" in out


def test_refuses_to_mix_a_changed_job(tmp_path, small_model):
    fields = job_fields(small_model, tmp_path / "store", images=2, metrics=["pointing-game"])
    cnnlens.jobs.run(**fields)
    changed = {**fields, "methods": {"saliency": {}, "grad-cam": {"layer": "layer1"}, "random": {}}}
    with pytest.raises(ConfigError, match="methods differ"):
        cnnlens.jobs.run(**changed)
    assert cnnlens.store.open(tmp_path / "store").job["methods"]["grad-cam"] == {"layer": "auto"}
    again = cnnlens.jobs.run(**fields)  # the same job: nothing to do
    assert again.ran == [] and again.skipped == [0]
    fresh = cnnlens.jobs.run(**changed, new_store=True)
    assert fresh.ran == [0]
    assert cnnlens.store.open(tmp_path / "store").job["methods"]["grad-cam"] == {"layer": "layer1"}


@pytest.mark.slow
def test_driver_killed_resumes_bit_identical(tmp_path, small_model, reference):
    store = tmp_path / "store"
    job = write_yaml(tmp_path / "job.yaml", job_fields(small_model, store))
    proc = cli("run", str(job))
    seen = wait_for_shards(proc, store, 2)
    kill(proc.pid)
    proc.communicate(timeout=60)
    done = cnnlens.store.open(store).finished.size // 2
    assert 2 <= done < 12, f"the job was not killed mid-way ({done} shards finished)"
    resumed = cnnlens.jobs.run(**job_fields(small_model, store))
    # only the unfinished shards were run again; none twice
    assert resumed.skipped == list(range(done)) or len(resumed.skipped) == done
    assert sorted(resumed.ran + resumed.skipped) == list(range(12)) and seen >= 2
    assert_same_store(store, reference)


@pytest.mark.slow
def test_worker_killed_is_rerun_and_result_identical(tmp_path, small_model, reference):
    store = tmp_path / "store"
    job = write_yaml(tmp_path / "job.yaml", job_fields(small_model, store, workers=2))
    proc = cli("run", str(job))
    wait_for_shards(proc, store, 1)
    workers = worker_pids(proc.pid)
    assert len(workers) == 2, workers
    kill(workers[0])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "a worker process died" in err and "12 shard(s) run" in out
    assert_same_store(store, reference)


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name
)
def test_killed_driver_leaves_no_worker_behind(tmp_path, small_model, signum):
    """Issue 28: a SIGKILLed driver left its 2 workers and the resource tracker running.
    The job is long (100 shards); the driver is signalled once a shard is written
    (the workers hold their model) and its pool must be gone within the deadline, a
    liveness bound (they used to stay until killed by hand)."""
    store = tmp_path / "store"
    job = write_yaml(tmp_path / "job.yaml", job_fields(small_model, store, workers=2, images=200))
    # SIGINT as from Ctrl-C, even where this test runs with SIGINT ignored (inherited)
    proc = cli("run", str(job), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    started: dict[int, int | None] = {}
    try:
        assert wait_for_shards(proc, store, 1) >= 1 and proc.poll() is None
        pool = pool_pids(proc.pid)
        assert len(pool["workers"]) == 2 and len(pool["tracker"]) == 1, pool
        started = {pid: start_time(pid) for pid in pool["workers"] + pool["tracker"]}
        proc.send_signal(signum)
        code = proc.wait(timeout=60)  # not communicate: orphans would hold its pipes
        deadline = time.monotonic() + 10
        alive = started
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = {pid: t for pid, t in alive.items() if t is not None and start_time(pid) == t}
        assert not alive, f"still running after the driver got {signum.name}: {alive} of {pool}"
    finally:  # leave nothing behind
        if proc.poll() is None:
            proc.kill()
        for pid, t in started.items():
            if t is not None and start_time(pid) == t:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        err = proc.communicate()[1]
    assert code == (130 if signum == signal.SIGINT else -signum), err
    assert cnnlens.store.open(store).finished.size < 200  # it was killed mid-way


def test_compile_setting_is_part_of_the_job(tmp_path, small_model):
    from cnnlens import nets
    from cnnlens.jobs.spec import AUTO_COMPILE_IMAGES, resolve_compile

    model = nets.create("lenet5", num_classes=3)
    assert resolve_compile("on", 1, model) and not resolve_compile("off", 10**6, model)
    assert not resolve_compile("auto", AUTO_COMPILE_IMAGES - 1, model)
    assert resolve_compile("auto", AUTO_COMPILE_IMAGES, model)  # long enough to repay it
    fields = job_fields(small_model, tmp_path / "store", images=2, metrics=["pointing-game"])
    cnnlens.jobs.run(**fields, compile="off")
    with pytest.raises(ConfigError, match="compile differ"):
        cnnlens.jobs.run(**fields, compile="on")  # compiled rounding differs: not mixed

"""Jobs on the Ray engine (a local cluster, ``ray.init(num_cpus=2)``, shared by the
module): the same store as the local engine bit for bit, and resume after a SIGKILL
of the driver."""

from __future__ import annotations

import pytest

import cnnlens.jobs
import cnnlens.store
from jobs_helpers import (  # noqa: F401  (fixtures)
    assert_same_store,
    cli,
    job_fields,
    kill,
    ray_actor_pids,
    reference_fixture,
    small_model_fixture,
    wait_for_shards,
    write_yaml,
)

ray = pytest.importorskip("ray", reason="the ray engine needs Ray (pip install 'cnnlens[ray]')")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address  # this cluster, not "auto": another may run
    ray.shutdown()


def test_ray_engine_equals_local(cluster, tmp_path, small_model, reference):
    store = tmp_path / "store"
    result = cnnlens.jobs.run(**job_fields(small_model, store, engine="ray", workers=2))
    assert result.ran == list(range(12))
    shards = cnnlens.store.open(store).metrics_table()["shard"]
    assert sorted(set(shards)) == list(range(12))
    assert_same_store(store, reference)


def test_ray_driver_killed_resumes_bit_identical(cluster, tmp_path, small_model, reference):
    store = tmp_path / "store"
    fields = job_fields(small_model, store, engine="ray", workers=2)
    proc = cli("run", str(write_yaml(tmp_path / "job.yaml", fields)), "--address", cluster)
    wait_for_shards(proc, store, 2, timeout=180)
    kill(proc.pid)
    proc.communicate(timeout=60)
    done = cnnlens.store.open(store).finished.size // 2
    assert 2 <= done < 12, f"the job was not killed mid-way ({done} shards finished)"
    resumed = cnnlens.jobs.run(**fields)
    assert len(resumed.skipped) == done and len(resumed.ran) == 12 - done
    assert_same_store(store, reference)


def test_ray_worker_killed_job_finishes_identical(cluster, tmp_path, small_model, reference):
    store = tmp_path / "store"
    fields = job_fields(small_model, store, engine="ray", workers=2)
    proc = cli("run", str(write_yaml(tmp_path / "job.yaml", fields)), "--address", cluster)
    wait_for_shards(proc, store, 1, timeout=180)
    actors = ray_actor_pids()
    assert actors, "no Ray Data actor process found"
    kill(actors[0])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "12 shard(s) run" in out  # Ray restarted the actor and retried its shard
    assert_same_store(store, reference)

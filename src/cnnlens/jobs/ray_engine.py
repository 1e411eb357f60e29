"""The ``ray`` engine: a Ray Data pipeline over the pending shards (``pip install
"cnnlens[ray]"``).

The shards are a Ray data set of ``{shard, start, stop}`` rows; ``map_batches``
runs them on a pool of actors (one batch = one shard), each loading the model once
in its constructor and asking for ``num_gpus=1`` where the cluster has GPUs. Ray
schedules, retries and applies backpressure; each result comes back to the driver
as bytes (:func:`~cnnlens.jobs.work.to_bytes`) and is written to the same store
as with the local engine, so the store lives where the driver runs
(``address="auto"`` joins a running cluster, ``"ray://host:10001"`` a remote one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from ..errors import ConfigError
from .work import ShardWorker, from_bytes, to_bytes


class _ShardActor:
    """A Ray Data actor: builds the shard worker once, then runs one shard per batch."""

    def __init__(self, make_worker: Callable[[], ShardWorker], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.worker = make_worker()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for k, a, b in zip(batch["shard"], batch["start"], batch["stop"], strict=True):
            out.append(to_bytes(self.worker.compute(int(k), int(a), int(b))))
        return {"shard": np.asarray(batch["shard"]), "result": np.asarray(out, dtype=object)}


def run_ray(
    make_worker: Callable[[], ShardWorker],
    shards: dict[int, tuple[int, int]],
    pending: list[int],
    write: Callable[[int, object], None],
    *,
    workers: int = 1,
    threads: int = 1,
    address: str | None = None,
) -> None:
    """Run ``pending`` shards on Ray and ``write(k, shard_data)`` each as it arrives."""
    try:
        import ray
    except ImportError:
        raise ConfigError('engine ray needs Ray: pip install "cnnlens[ray]"') from None
    if not pending:
        return
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the job's own bar counts images
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    rows = [{"shard": k, "start": shards[k][0], "stop": shards[k][1]} for k in pending]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    results = ds.map_batches(
        _ShardActor,
        fn_constructor_args=(make_worker, threads),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows))),
        num_cpus=threads,
        num_gpus=gpus,
    )
    for batch in results.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
        for k, blob in zip(batch["shard"], batch["result"], strict=True):
            write(int(k), from_bytes(bytes(blob)))

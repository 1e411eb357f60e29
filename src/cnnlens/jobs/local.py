"""The ``local`` engine: shards run in this process, or in N worker processes.

Each worker process loads the model once (pool initializer) and turns shards
into bytes (:func:`~cnnlens.jobs.work.to_bytes`); this process, the driver, writes
them to the store as they finish, so one process writes the manifest. Which shards
run is decided by the manifest (:meth:`~cnnlens.store.StoreWriter.pending`). If a
worker dies (killed, out of memory) the pool is broken: the shards it had not
returned are run again in a fresh pool, at most ``retries`` times.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from ..progress import log_line
from .work import ShardWorker, from_bytes, to_bytes

_WORKER: ShardWorker | None = None


def _init_worker(make_worker: Callable[[], ShardWorker], threads: int) -> None:
    import torch

    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = make_worker()


def _run_shard(k: int, start: int, stop: int) -> tuple[int, bytes]:
    assert _WORKER is not None, "worker not initialised"
    return k, to_bytes(_WORKER.compute(k, start, stop))


def run_local(
    make_worker: Callable[[], ShardWorker],
    shards: dict[int, tuple[int, int]],
    pending: list[int],
    write: Callable[[int, object], None],
    *,
    workers: int = 1,
    threads: int = 1,
    retries: int = 2,
) -> None:
    """Run ``pending`` shards and ``write(k, shard_data)`` each as it finishes.

    ``make_worker`` builds a :class:`ShardWorker` (called once per process: it must
    be picklable for ``workers > 1``, e.g. a ``functools.partial``)."""
    if workers == 1:
        worker = make_worker()
        for k in pending:
            write(k, worker.compute(k, *shards[k]))
        return
    left = list(pending)
    attempt = 0
    while left:
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(
                max_workers=min(workers, len(left)),
                mp_context=context,
                initializer=_init_worker,
                initargs=(make_worker, threads),
            ) as pool:
                futures = [pool.submit(_run_shard, k, *shards[k]) for k in left]
                for future in as_completed(futures):
                    k, blob = future.result()
                    write(k, from_bytes(blob))
                    left.remove(k)
        except BrokenProcessPool:
            attempt += 1
            if attempt > retries:
                raise RuntimeError(
                    f"a worker process died {attempt} times; {len(left)} shard(s) not run "
                    "(run the job again to resume)"
                ) from None
            log_line(f"run: a worker process died; running its {len(left)} shard(s) again")

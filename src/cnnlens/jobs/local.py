"""The ``local`` engine: shards run in this process, or in N worker processes.

Each worker process loads the model once (pool initializer) and turns shards
into bytes (:func:`~cnnlens.jobs.work.to_bytes`); this process, the driver, writes
them to the store as they finish, so one process writes the manifest. Which shards
run is decided by the manifest (:meth:`~cnnlens.store.StoreWriter.pending`). If a
worker dies (killed, out of memory) the pool is broken: the shards it had not
returned are run again in a fresh pool, at most ``retries`` times.

Workers never outlive the driver: each one ends when the driver dies, however it
died (SIGKILL included, when the driver runs no cleanup), see :func:`_end_with_parent`;
a worker still starting up (importing torch, seconds) ends as soon as its start-up is
done. An exception or Ctrl-C in the driver kills them at once (:func:`_stop`) rather
than waiting for the shards already queued. With no worker left holding its pipe, the
multiprocessing resource tracker the spawn context started exits too.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from ..progress import log_line
from .work import ShardWorker, from_bytes, to_bytes

_WORKER: ShardWorker | None = None
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_POLL_SECONDS = 0.5


def _end_with_parent(parent: int) -> None:
    """End this worker process when the process ``parent`` (the driver) ends.

    On Linux the kernel sends SIGKILL at the driver's death (``prctl(PR_SET_PDEATHSIG)``),
    immediately and whatever this process is doing. Everywhere, a daemon thread also
    polls ``os.getppid()``, which changes once the driver is gone (the orphan is
    re-parented): the fallback where prctl is missing, and the cover for a driver that
    died before the prctl call. (The kernel sends the signal when the *thread* that
    started this process ends: the thread in :func:`run_local`, which outlives its pool.)
    Ctrl-C is left to the driver, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="cnnlens-watch-driver", daemon=True).start()


def _init_worker(make_worker: Callable[[], ShardWorker], threads: int, parent: int) -> None:
    import torch

    global _WORKER
    _end_with_parent(parent)
    torch.set_num_threads(threads)
    _WORKER = make_worker()


def _run_shard(k: int, start: int, stop: int) -> tuple[int, bytes]:
    assert _WORKER is not None, "worker not initialised"
    return k, to_bytes(_WORKER.compute(k, start, stop))


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the shards not started and kill the workers now (their results would be
    thrown away: the driver writes, and a rerun resumes from the manifest)."""
    kill = getattr(pool, "kill_workers", None)  # Python >= 3.14
    if kill is not None:
        kill()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown
    pool.shutdown(wait=False, cancel_futures=True)  # empties it
    for process in processes:
        process.kill()


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
                initargs=(make_worker, threads, os.getpid()),
            ) as pool:
                try:
                    futures = [pool.submit(_run_shard, k, *shards[k]) for k in left]
                    for future in as_completed(futures):
                        k, blob = future.result()
                        write(k, from_bytes(blob))
                        left.remove(k)
                except BrokenProcessPool:
                    raise  # the pool has ended its workers already
                except BaseException:  # an error, Ctrl-C: not wait for the other shards
                    _stop(pool)
                    raise
        except BrokenProcessPool:
            attempt += 1
            if attempt > retries:
                raise RuntimeError(
                    f"a worker process died {attempt} times; {len(left)} shard(s) not run "
                    "(run the job again to resume)"
                ) from None
            log_line(f"run: a worker process died; running its {len(left)} shard(s) again")

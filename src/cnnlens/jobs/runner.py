"""Run a job: validate it, open its store, run the pending shards on an engine, summarise.

``cnnlens.jobs.run(spec)`` is what ``cnnlens run job.yaml`` calls. The driver
(this process) is the store's only writer: engines hand it each finished shard,
it writes the data and then the manifest entry, and a bar shows images/s and the
ETA over the whole job. Rerunning a job skips the shards the manifest names.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..progress import Progress, log_line
from ..store import StoreWriter
from .spec import JobSpec, PreparedJob, model_checksum, prepare
from .work import ShardWorker


def _build_worker(model, data, job: dict) -> ShardWorker:
    """Load the model and data in a worker (once per process or actor), as the job's
    driver did (:func:`cnnlens.jobs.spec.prepare`)."""
    from ..compatibility import check_fits
    from ..loading.spec import ModelSpec, card_data

    if isinstance(model, str):
        card = {k: v for k, v in (job.get("model_card") or {}).items() if v is not None}
        model = ModelSpec.from_fields(model, card).open()
        if model_checksum(model) != job["model_sha256"]:
            raise CheckpointError(f"the model in {job['model']} changed while the job ran")
    if isinstance(data, dict):
        data = card_data(data["name"], data["split"], model)
        data = check_fits(model, data, data=data.name, by_name=True)
    return ShardWorker(model, data, job)


def worker_factory(prepared: PreparedJob, *, in_process: bool):
    """A picklable function building a :class:`ShardWorker`; in this process it
    reuses the model and data already loaded."""
    job = prepared.job
    if in_process:
        return functools.partial(ShardWorker, prepared.model, prepared.dataset, job)
    model = job["model"] if job["model"] is not None else prepared.model
    data = job["data"] if job["data"]["split"] is not None else prepared.dataset
    return functools.partial(_build_worker, model, data, job)


@dataclass
class JobResult:
    """What a run did: the store, the shards it ran now and the summary tables."""

    store: Path
    ran: list[int]
    skipped: list[int]
    seconds: float
    methods: list[dict]
    metrics: list[dict]

    def markdown(self) -> str:
        lines = [
            "| method | images | explain s | x model-pass floor | scoring s |",
            "|---|---|---|---|---|",
        ]
        for r in self.methods:
            cells = (
                r["method"],
                r["images"],
                f"{r['seconds']:.1f}",
                f"{r['floor_multiple']:.1f}",
                f"{r['score_seconds']:.1f}",
            )
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines += ["", "| method | metric | mean ± 95 % CI | n |", "|---|---|---|---|"]
        for r in self.metrics:
            mean = "–" if math.isnan(r["mean"]) else f"{r['mean']:.3f} ± {r['ci95']:.3f}"
            lines.append(f"| {r['method']} | {r['metric']} | {mean} | {r['n']} |")
        return "\n".join(lines) + "\n"


def summarise(path: str | Path) -> tuple[list[dict], list[dict]]:
    """Per method (images, seconds explaining, their multiple of the model-pass floor:
    one forward+backward pass over the same images, and seconds scoring the maps
    with the metrics) and per method x
    metric (mean, 95 % CI half width, n) over the store's finished shards."""
    from .. import store as store_module
    from ..metrics.result import ci95

    store = store_module.open(path)
    shards = store.shards
    floor = sum(s.get("floor_seconds", 0.0) for s in shards.values())
    methods = []
    for m in store.methods:
        secs = sum(s.get("seconds", {}).get(m, 0.0) for s in shards.values())
        scoring = sum(s.get("score_seconds", {}).get(m, 0.0) for s in shards.values())
        images = sum(s["stop"] - s["start"] for s in shards.values())
        methods.append(
            {
                "method": m,
                "images": images,
                "seconds": secs,
                "score_seconds": scoring,
                "floor_multiple": secs / floor if floor > 0 else math.nan,
            }
        )
    table = store.metrics_table()
    metrics = []
    for (method, metric), group in table.groupby(["method", "metric"], sort=False):
        values = torch.tensor(group["value"].to_numpy(dtype="float64"))
        ok = values[~torch.isnan(values)]
        metrics.append(
            {
                "method": method,
                "metric": metric,
                "mean": float(ok.mean()) if ok.numel() else math.nan,
                "ci95": ci95(values),
                "n": int(ok.numel()),
            }
        )
    return methods, metrics


def run(spec: JobSpec | None = None, **fields) -> JobResult:
    """Run a job (a :class:`JobSpec`, or its fields as keywords); see the module docstring."""
    spec = spec if spec is not None else JobSpec(**fields)
    prepared = prepare(spec)
    writer = StoreWriter(spec.store, prepared.job, new=spec.new_store)
    prepared.job = writer.job  # a resumed store's job as saved (e.g. its order of methods)
    pending = writer.pending(prepared.shards)
    skipped = [k for k in prepared.shards if k not in pending]
    threads = spec.threads or max(1, (os.cpu_count() or 1) // spec.workers)
    total = sum(b - a for a, b in (prepared.shards[k] for k in pending))
    log_line(
        f"run: {prepared.job['n_images']} images in {len(prepared.shards)} shards "
        f"({len(skipped)} finished already), methods {', '.join(prepared.job['methods'])}, "
        f"engine {spec.engine} x{spec.workers}"
    )
    t0 = time.perf_counter()
    with Progress(total=total, desc="run (images)", enabled=spec.progress) as bar:

        def write(k: int, data) -> None:
            writer.write_shard(k, data)
            bar.update(data.stop - data.start)

        in_process = spec.engine == "local" and spec.workers == 1
        make_worker = worker_factory(prepared, in_process=in_process)
        if spec.engine == "local":
            from .local import run_local

            before = torch.get_num_threads()
            if in_process and spec.threads:
                torch.set_num_threads(spec.threads)
            try:
                run_local(
                    make_worker,
                    prepared.shards,
                    pending,
                    write,
                    workers=spec.workers,
                    threads=threads,
                )
            finally:
                torch.set_num_threads(before)
        else:
            from .ray_engine import run_ray

            run_ray(
                make_worker,
                prepared.shards,
                pending,
                write,
                workers=spec.workers,
                threads=threads,
                address=spec.address,
            )
    seconds = time.perf_counter() - t0
    methods, metrics = summarise(spec.store)
    return JobResult(Path(spec.store), pending, skipped, seconds, methods, metrics)

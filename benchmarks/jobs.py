"""Throughput of a dataset-scale job (``cnnlens.jobs``) by engine and worker count.

    python benchmarks/jobs.py [--model runs/demo] [--images 128] [--shard-size 16]
                              [--methods saliency,grad-cam,...] [--metrics all]
                              [--runs local:1,local:2,ray:2] [--keep DIR]

The same job (the first ``--images`` images of ``shapes``' test split, ``--methods``
with their default parameters except those listed in ``PARAMS``, ``--metrics``) runs
once per ``engine:workers`` entry of ``--runs``, each into a new store, one after
another. Rows: seconds, images/s, speed-up over the first row, the store's size on
disk, and for Ray the cluster start-up (``ray.init(num_cpus=workers)``, not in the
job's seconds). The per-worker overhead of Ray against the local engine is the
difference of their seconds at the same worker count. The stores are compared bit
for bit (maps, tables) with the first one. Each worker gets ``cpu_count // workers``
torch threads. The model defaults to a ResNet-20 with random weights; ``--model``
takes a saved one (e.g. the demo's). The load average is printed before and after:
numbers taken on a shared machine are not a measurement of the engines; rerun idle.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import cnnlens
import cnnlens.jobs
import cnnlens.store

DEFAULT_METHODS = "saliency,input-x-gradient,integrated-gradients,guided-backprop,grad-cam,rise"
PARAMS = {"integrated-gradients": {"steps": 16}, "rise": {"n_masks": 500}}


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def default_model(folder: Path) -> Path:
    import torch

    from cnnlens import data, nets

    test = data.load("shapes", split="test")
    torch.manual_seed(0)
    model = nets.create("resnet20", num_classes=test.num_classes).eval()
    return cnnlens.save(
        model,
        folder,
        classes=test.classes,
        mean=test.mean,
        std=test.std,
        input_shape=test.image_shape,
    )


def same(a: Path, b: Path) -> bool:
    sa, sb = cnnlens.store.open(a), cnnlens.store.open(b)
    idx = sa.finished
    maps = all(np.array_equal(sa.maps(m, idx), sb.maps(m, idx), equal_nan=True) for m in sa.methods)
    return maps and sa.metrics_table().equals(sb.metrics_table())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--metrics", default="all")
    parser.add_argument("--runs", default="local:1,local:2,ray:2")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--compile", default="off")
    parser.add_argument("--keep", default=None, help="keep the stores in this folder")
    args = parser.parse_args()
    os.environ.setdefault("CNNLENS_QUIET", "1")
    work = Path(args.keep or tempfile.mkdtemp(prefix="cnnlens-jobs-bench-"))
    model = Path(args.model) if args.model else default_model(work / "model")
    methods = {m: PARAMS.get(m, {}) for m in args.methods.split(",")}
    print(f"load average before: {os.getloadavg()}; {os.cpu_count()} CPUs")
    print(
        f"job: {args.images} shapes test images, shards of {args.shard_size}, methods "
        f"{methods}, metrics {args.metrics}, model {model}"
    )
    print("| engine | workers | seconds | images/s | x first | start-up s | store MB | same |")
    print("|---|---|---|---|---|---|---|---|")
    first: tuple[float, Path] | None = None
    for entry in args.runs.split(","):
        engine, _, workers = entry.partition(":")
        workers = int(workers or 1)
        store = work / f"store-{engine}-{workers}"
        shutil.rmtree(store, ignore_errors=True)
        startup = 0.0
        if engine == "ray":
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        cnnlens.jobs.run(
            model=model,
            store=store,
            data="shapes",
            images=args.images,
            shard_size=args.shard_size,
            methods=methods,
            metrics=args.metrics,
            engine=engine,
            workers=workers,
            dtype=args.dtype,
            compile=args.compile,
            progress=False,
        )
        seconds = time.perf_counter() - t0
        if engine == "ray":
            ray.shutdown()
        if first is None:
            first = (seconds, store)
        identical = "yes" if same(store, first[1]) else "NO"
        print(
            f"| {engine} | {workers} | {seconds:.1f} | {args.images / seconds:.2f} | "
            f"{first[0] / seconds:.2f} | {startup:.1f} | {size_of(store) / 1e6:.2f} | "
            f"{identical} |",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

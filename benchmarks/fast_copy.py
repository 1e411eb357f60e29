"""Forward time of each fast copy of a model against the model as given, interleaved
in one process (``cnnlens.accel.fast_copy``; ``cnnlens.accel.folding``).

    python benchmarks/fast_copy.py [--model resnet20] [--size 32] [--batch 32,64]
                                   [--threads 1] [--rounds 10]

Rows: the model as given; the ``"exact"`` copy (channels-last); the ``"folded"``
copy (BatchNorm folded, ReLUs in place); the ``"forward"`` copy (as ``"folded"``,
ReLUs in place also where autograd would refuse them).
Each is timed as the best of ``--rounds`` rounds, the rows taking turns within a
round, and checked against the model's logits first. Milliseconds per image and
the multiple of the model's time. The model is the one ``attribution.py`` uses.
"""

from __future__ import annotations

import argparse
import time

import torch

from attribution import benchmark_model
from cnnlens import accel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", default="32,64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = benchmark_model(args.model)
    print(f"{args.model} at {args.size} px, {args.threads} thread(s), best of {args.rounds}")
    print("| batch | run | ms / image | x model |")
    print("|---|---|---|---|")
    for batch in (int(b) for b in args.batch.split(",")):
        x = torch.rand(batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(2))
        rows = {"model as given": model}
        for kind in accel.KINDS:
            if accel.fast_copy(model, x, kind) is None:
                print(f"{kind}: no copy (the model runs as it is)")
            else:
                rows[kind] = accel.fast_runner(model, x, kind)
        with torch.no_grad():
            expected = model(x)
            for name, run in rows.items():
                if not accel.same_outputs(run(x), expected):
                    raise SystemExit(f"{name}: logits differ from the model's")
            best = dict.fromkeys(rows, float("inf"))
            for _ in range(args.rounds):
                for name, run in rows.items():
                    start = time.perf_counter()
                    run(x)
                    best[name] = min(best[name], time.perf_counter() - start)
        for name, seconds in best.items():
            ratio = seconds / best["model as given"]
            print(f"| {batch} | {name} | {1e3 * seconds / batch:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()

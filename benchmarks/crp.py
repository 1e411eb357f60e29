"""Concept-conditional heatmaps (CRP) as a multiple of one LRP backward at batch size.

    python benchmarks/crp.py [--arch resnet20] [--layer layer1] [--channels 16]
                             [--n 8] [--threads 2] [--rounds 3]

The work: ``--n`` test images of ``shapes`` (32 px), a ``benchmark_model``,
``conditional_relevance`` for the first ``--channels`` channels of ``--layer``
(k conditions, one batched backward over ``n * k`` rows, chunked). The floor is
``k`` times one LRP (``cnnlens.explain(..., "lrp")``) of the ``n`` images, so the
issue's goal "k heatmaps cost about k backward passes at batch size" reads as a ratio
near 1; "LRP of the kx batch" is plain LRP of the ``n * k`` rows CRP runs (its own
floor: what the expanded batch costs without the conditions); "separate calls" is the
naive alternative, k conditional calls of one channel each. Rounds are interleaved.
Not a test: it prints seconds and ratios; best of ``--rounds``.
zennit-crp is not installed here (it needs torchvision), so it is not compared.
"""

from __future__ import annotations

import argparse
import time

import torch

from attribution import benchmark_model
from cnnlens import explain
from cnnlens.analysis import conditional_relevance
from cnnlens.data import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--layer", default="layer1")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = benchmark_model(args.arch)
    x, _ = load("shapes", split="test").tensors(range(args.n))
    k = args.channels
    channels = list(range(k))

    def lrp():
        return explain(model, x, "lrp", target=0)

    def batched():
        return conditional_relevance(model, x, layer=args.layer, channels=channels, target=0)

    xk = x.repeat_interleave(k, 0)

    def lrp_expanded():
        return explain(model, xk, "lrp", target=0)

    def per_call():
        for c in channels:
            conditional_relevance(model, x, layer=args.layer, channels=[c], target=0)

    works = {
        "LRP, 1 backward": lrp,
        f"LRP of the {k}x batch": lrp_expanded,
        f"CRP, {k} channels batched": batched,
        f"CRP, {k} separate calls": per_call,
    }
    for fn in works.values():  # warm: the folded copy and the chunk size are cached per model
        fn()
    seconds = {name: [] for name in works}
    for _ in range(args.rounds):  # interleaved rounds: a busy machine slows all alike
        for name, fn in works.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    rows = [(name, min(times)) for name, times in seconds.items()]
    one = rows[0][1]
    print(f"{args.arch} {args.layer}, {args.n} images of 32 px, {args.threads} threads")
    print(f"{'work':28s} {'seconds':>8s} {'x LRP':>7s} {'x k LRP':>8s}")
    for name, sec in rows:
        print(f"{name:28s} {sec:8.3f} {sec / one:7.2f} {sec / (k * one):8.2f}")


if __name__ == "__main__":
    main()

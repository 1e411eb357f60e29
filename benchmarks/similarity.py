"""Layer similarity over all layer pairs of a ResNet-20, as a multiple of its floor: the
forward passes that collect the activations (``cnnlens.analysis.similarity.layer_similarity``).

    python benchmarks/similarity.py [--n 256] [--batch 64] [--threads 1] [--rounds 3]
                                    [--methods cka-minibatch,cka-full,svcca]

The floor is the same forward passes over the same batches with the same layers
hooked (``cnnlens.hooks.capture_outputs``), doing nothing with the outputs. Each
row and the floor take turns within a round; the best of ``--rounds`` is kept.
Not a test: it prints a table of seconds and ratios.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from attribution import benchmark_model
from cnnlens.analysis import default_layers, layer_similarity
from cnnlens.hooks import capture_outputs, frozen

VARIANTS = {
    "cka-minibatch": {"method": "cka", "estimator": "minibatch"},  # flatten, unbiased HSIC
    "cka-full": {"method": "cka", "estimator": "full"},  # flatten, every activation kept
    "cka-mean": {"method": "cka", "estimator": "full", "reduce": "mean"},
    "svcca": {"method": "svcca"},  # mean pooled
}


def floor(model: nn.Module, x: torch.Tensor, layers: list[str], batch: int) -> float:
    """Seconds for the hooked forward passes alone."""
    start = time.perf_counter()
    with frozen(model), capture_outputs(model, layers), torch.no_grad():
        for i in range(0, len(x), batch):
            model(x[i : i + batch])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", default="cka-minibatch,cka-full")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = benchmark_model("resnet20")
    x = torch.randn(args.n, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    data = (x, torch.zeros(args.n, dtype=torch.long))
    layers = default_layers(model, x[:1])
    names = args.methods.split(",")
    best = dict.fromkeys(["floor", *names], float("inf"))
    for _ in range(args.rounds):
        best["floor"] = min(best["floor"], floor(model, x, layers, args.batch))
        for name in names:
            start = time.perf_counter()
            layer_similarity(model, data, layers=layers, batch_size=args.batch, **VARIANTS[name])
            best[name] = min(best[name], time.perf_counter() - start)
    pairs = len(layers) * (len(layers) + 1) // 2
    print(
        f"resnet20, {len(layers)} layers ({pairs} pairs), {args.n} images of 32x32, batch "
        f"{args.batch}, {args.threads} thread(s), best of {args.rounds}"
    )
    print("| run | seconds | x floor |")
    print("|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.3f} | {seconds / best['floor']:.2f} |")


if __name__ == "__main__":
    main()

"""Activation maximisation on a ResNet-20 as a multiple of its floor: ``steps`` forward and
backward passes (gradient to the input) of one batch holding every seed
(``cnnlens.analysis.visualisation.maximise``), and the same seeds optimised one at a time.

    python benchmarks/maximise.py [--model runs/demo/model] [--seeds 4] [--steps 64]
                                  [--threads 1] [--rounds 3] [--objective class|channel]

The floor is ``steps`` passes of the model as given (eval mode, parameters frozen) on a
batch of ``--seeds`` images; "1 seed at a time" runs ``maximise`` once per seed, whose
own floor is ``seeds x steps`` passes of one image. Every row and the floors take turns
within a round; the best of ``--rounds`` is kept. No peer library is installed to
compare with (Lucent, the PyTorch port of Lucid, is not available here). Not a test: it
prints a table of seconds and ratios.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from attribution import benchmark_model
from cnnlens.analysis import Objective, maximise


def floor(model: nn.Module, batch: int, steps: int) -> float:
    """Seconds for ``steps`` forward+backward passes of ``batch`` 32x32 images."""
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    start = time.perf_counter()
    for _ in range(steps):
        (grad,) = torch.autograd.grad(model(x)[:, 0].sum(), x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="a saved model (default: random weights)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--objective", default="class", choices=["class", "channel"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        import cnnlens

        model = cnnlens.load(args.model)
        for p in model.parameters():
            p.requires_grad_(False)
    else:
        model = benchmark_model("resnet20")
    objective = Objective.logit(3) if args.objective == "class" else Objective.channel("layer3", 5)
    seeds = tuple(range(args.seeds))
    common = {"steps": args.steps, "image_shape": (3, 32, 32)}
    runs = {
        f"{param}, {len(seeds)} seeds batched": lambda p=param: maximise(
            model, objective, parameterisation=p, seeds=seeds, **common
        )
        for param in ("fourier", "pixel")
    }
    for param in ("fourier", "pixel"):
        runs[f"{param}, 1 seed at a time"] = lambda p=param: [
            maximise(model, objective, parameterisation=p, seeds=(s,), **common) for s in seeds
        ]
    maximise(model, objective, steps=2, image_shape=(3, 32, 32))  # one-time setup (fast copy)
    floors = {"batch": float("inf"), "single": float("inf")}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.rounds):
        floors["batch"] = min(floors["batch"], floor(model, len(seeds), args.steps))
        floors["single"] = min(floors["single"], len(seeds) * floor(model, 1, args.steps))
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    print(
        f"resnet20, {args.objective} objective, {len(seeds)} seeds x {args.steps} steps, 32x32, "
        f"{args.threads} thread(s), best of {args.rounds}"
    )
    print("| run | seconds | x floor (batched passes) | x floor (one image per pass) |")
    print("|---|---|---|---|")
    print(
        f"| floor: {args.steps} passes of {len(seeds)} images | {floors['batch']:.3f} | 1.00 | "
        f"{floors['batch'] / floors['single']:.2f} |"
    )
    print(
        f"| floor: {len(seeds)} x {args.steps} passes of 1 image | {floors['single']:.3f} | "
        f"{floors['single'] / floors['batch']:.2f} | 1.00 |"
    )
    for name, seconds in best.items():
        print(
            f"| {name} | {seconds:.3f} | {seconds / floors['batch']:.2f} | "
            f"{seconds / floors['single']:.2f} |"
        )


if __name__ == "__main__":
    main()

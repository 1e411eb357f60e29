"""Network dissection of a ResNet-20 on ``shapes`` test images, as a multiple of its floor:
the forward passes that collect the activations (``cnnlens.analysis.Dissection``).

    python benchmarks/dissection.py [--model runs/demo/model] [--n 512] [--batch 64]
                                    [--threads 2] [--rounds 3]

The floor is one forward pass over the same images in the same batches with the same
layers (every block) hooked (``cnnlens.hooks.capture_outputs``), doing nothing with the
outputs. Dissection needs the thresholds before the IoU, so it reads every output twice:
``cache=True`` keeps the outputs of the first pass for the second (one forward), ``cache=
False`` runs the model again (two forwards, as Bau et al.'s code does). Each row and the
floor take turns within a round; the best of ``--rounds`` is kept. Without a saved model
(``--model``), a ResNet-20 with random weights stands in. Not a test: it prints a table of
seconds and ratios.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from attribution import benchmark_model
from cnnlens.analysis import Dissection, default_layers
from cnnlens.data import load
from cnnlens.hooks import capture_outputs, frozen
from similarity import floor  # the same hooked forward passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="runs/demo/model")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if Path(args.model, "model.json").is_file():
        import cnnlens

        model, which = cnnlens.load(args.model), args.model
    else:
        model, which = benchmark_model("resnet20"), "resnet20 (random weights)"
    data = load("shapes", split="test").subset(range(args.n))
    x = data.tensors()[0]
    layers = default_layers(model, x[:1])
    runs = {"cache": True, "no cache": False}
    best = dict.fromkeys(["floor", *runs], float("inf"))
    for _ in range(args.rounds):
        best["floor"] = min(best["floor"], floor(model, x, layers, args.batch))
        for name, cache in runs.items():
            start = time.perf_counter()
            Dissection(batch_size=args.batch, cache=cache).fit(model, data)
            best[name] = min(best[name], time.perf_counter() - start)
    channels = sum(int(o.shape[1]) for o in _outputs(model, x[:1], layers))
    print(
        f"{which}: {len(layers)} layers, {channels} channels, 20 concepts, {args.n} images of "
        f"32x32, batch {args.batch}, {args.threads} thread(s), best of {args.rounds}"
    )
    print("| run | seconds | x floor |")
    print("|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.3f} | {seconds / best['floor']:.2f} |")


def _outputs(model: nn.Module, x: torch.Tensor, layers: list[str]) -> list[torch.Tensor]:
    with frozen(model), capture_outputs(model, layers) as store, torch.no_grad():
        model(x)
    return [store[name] for name in layers]


if __name__ == "__main__":
    main()

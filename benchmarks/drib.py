"""Latency of DRIB's sparse path and cost of its computations as multiples of their floor.

    python benchmarks/drib.py --run runs/drib [--n 64 --repeats 20]
    python benchmarks/drib.py --arch resnet20 --density 0.5   (random gates, no run needed)

1. Latency at batch 1 and 64 (median ms of interleaved calls, :mod:`cnnlens.studies.drib.latency`):
   ungated, ungated with BatchNorm folded, the ungated model run by the sparse path's own
   code with every channel (the fair reference: same Python calls and BN folding, so the
   speedup against it is what computing fewer channels buys), the gated model run densely
   with multiplication by the mask (what the published gating code does), and the sparse
   path. Speedup = reference / sparse.
2. Each DRIB computation next to its model-pass floor, measured in the same run:
   ``dynamic_macs`` (floor: one gated forward per image), one alternating training step
   (floor: two forward+backward passes of the gated model, one per parameter group), and
   the credibility check (floor: layers x IBA steps x samples forward+backward passes).
   No peer library has a sparse gated path, so there is no side-by-side for it.

Without ``--run``, the architecture is gated with random masks of the given density of
nonzeros (the cost depends on the nonzeros and the spread of decisions, not on training);
``--run`` times a trained gated model (``cnnlens drib train``) and its ungated base. Record
``uptime`` with any number: on a shared machine the times move with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from cnnlens import nets
from cnnlens.studies.drib import dynamic_macs, gate, gated_layers
from cnnlens.studies.drib.credibility import credibility
from cnnlens.studies.drib.latency import latency_table
from cnnlens.studies.drib.training import GateRecipe, gating_objective
from cnnlens.train import OptimizerConfig


def timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def random_gated(arch: str, density: float, masks: int, seed: int = 0):
    torch.manual_seed(seed)
    base = nets.create(arch, num_classes=10).eval()
    g = torch.Generator().manual_seed(seed)
    gated = gate(base, masks=masks).eval()
    for gl in gated_layers(gated).values():
        gl.masks.data = (torch.rand(gl.masks.shape, generator=g) < density).float()
    return base, gated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default=None, help="a 'cnnlens drib train' run folder")
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--density", type=float, default=0.5, help="nonzeros of random masks")
    parser.add_argument("--masks", type=int, default=4)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-floors", action="store_true")
    args = parser.parse_args()
    if args.run:
        import cnnlens
        from cnnlens.data import load
        from cnnlens.studies.drib.runs import load_gated

        identity = json.loads(open(os.path.join(args.run, "run.json")).read())["identity"]
        gated = load_gated(os.path.join(args.run, "model"))
        base = cnnlens.load(identity["model"])
        test = load(identity.get("data", "shapes"), split="test")
        x, _ = test.tensors(range(min(args.n, len(test))))
    else:
        base, gated = random_gated(args.arch, args.density, args.masks)
        x = torch.randn(args.n, 3, 32, 32)
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    dyn = dynamic_macs(gated, x)
    print(
        f"MACs: ungated {dyn.before / 1e6:.2f} M, gated mean {dyn.mean / 1e6:.2f} M, "
        f"reduction {dyn.reduction_ratio:.1f} %"
    )
    for row in latency_table(base, gated, x, batches=(1, 64), repeats=args.repeats):
        ms = {k.removesuffix(" (ms)"): v for k, v in row.items() if k != "batch"}
        cells = ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items())
        print(f"batch {row['batch']}: {cells}")
        sparse = ms["gated, sparse"]
        print(
            f"  speedup of sparse vs ungated {ms['ungated'] / sparse:.2f}x, vs BN-folded "
            f"{ms['ungated (BN folded)'] / sparse:.2f}x, vs the same code with all channels "
            f"{ms['ungated (sparse code, all channels)'] / sparse:.2f}x, vs dense masked "
            f"{ms['gated, dense x mask'] / sparse:.2f}x"
        )
    if args.skip_floors:
        return
    n = len(x)
    with torch.no_grad():
        t_forward = timed(lambda: gated(x))
    t_dyn = timed(lambda: dynamic_macs(gated, x))
    print(f"dynamic_macs on {n} images: {t_dyn:.3f} s = {t_dyn / t_forward:.2f} x floor")

    with torch.no_grad():
        classes = gated(x[:1]).shape[1]
    y = torch.randint(0, classes, (n,))
    objective = gating_objective(gated, GateRecipe())
    objective.bind(gated)
    groups = objective.parameter_groups(list(gated.parameters()))
    configs = objective.optimizer_configs(OptimizerConfig())
    opts = {k: configs[k].build(ps) for k, ps in groups.items()}
    gated.train()

    def passes():
        for _ in range(2):
            gated.zero_grad()
            torch.nn.functional.cross_entropy(gated(x), y).backward()

    t_floor = timed(passes)
    t_step = timed(lambda: objective.train_step(gated, x, y, opts))
    gated.eval()
    print(f"alternating step on {n} images: {t_step:.3f} s = {t_step / t_floor:.2f} x floor")

    k, steps, samples = min(8, n), 5, 2
    xs = x[:k]
    layers = len(gated_layers(gated))
    xr = xs.repeat_interleave(samples, 0)

    def iba_floor():
        for _ in range(layers * steps):
            xi = xr.clone().requires_grad_(True)
            base(xi).sum().backward()

    t_floor = timed(iba_floor, repeats=1)
    t_cred = timed(
        lambda: credibility(
            gated, xs, statistics_images=x, reference=base, steps=steps, samples=samples
        ),
        repeats=1,
    )
    print(
        f"credibility on {k} images ({layers} layers x {steps} steps x {samples} samples): "
        f"{t_cred:.2f} s = {t_cred / t_floor:.2f} x floor (statistics estimation included)"
    )


if __name__ == "__main__":
    main()

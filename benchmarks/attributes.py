"""Cost of the attribute-network computations (paper 003) as multiples of their model-pass floor.

    python benchmarks/attributes.py [--run runs/attr] [--n 128]

Each computation is timed once after a warm-up, next to the time of the forward passes it
cannot avoid (one forward of the full network per image and per distinct input or network),
measured in the same run. No peer library implements these, so there is no side-by-side.

- training step (forward + backward + Adam) per image vs one forward;
- ``ChannelRoles.fit``: one forward per image (floor 1);
- ``pruning_sweep`` of P points: naive floor = P forwards of the pruned networks; the sweep
  runs the unpruned stem once and only the pruned last conv, masks and heads per point;
- ``robustness_grid`` of S noise levels x T transformations: naive floor = S x T forwards;
  the grid runs the extractor and masks once per level;
- ``attention_predictability``: naive floor = one forward per edit.

Without ``--run``, a randomly initialised network (the architecture, not the accuracy, sets
the cost) is used.
"""

from __future__ import annotations

import argparse
import time

import torch

from cnnlens.data import load
from cnnlens.studies.channel_roles.objective import AttributeObjective
from cnnlens.studies.channel_roles.predictability import attention_predictability
from cnnlens.studies.channel_roles.pruning import pruning_sweep, random_order
from cnnlens.studies.channel_roles.reading import ChannelRoles
from cnnlens.studies.channel_roles.robustness import robustness_grid
from cnnlens.studies.channel_roles.training import build_network


def timed(fn):
    fn()  # warm-up
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default=None)
    parser.add_argument("--n", type=int, default=128)
    args = parser.parse_args()
    n = args.n
    if args.run:
        from cnnlens.studies.channel_roles.runs import open_run

        run = open_run(args.run)
        model, test = run.model, run.test
    else:
        test = load("shapes", split="test", size=16, n=n)
        torch.manual_seed(0)
        model = build_network(test).eval()
    x, _ = test.tensors(range(min(n, len(test))))
    n = len(x)
    with torch.no_grad():
        forward = timed(lambda: [model(x[i : i + 64]) for i in range(0, n, 64)])
    rows = [("forward, per image (ms)", 1000 * forward / n, 1.0)]

    objective = AttributeObjective()
    opt = torch.optim.Adam(model.parameters(), lr=0.0)
    y = test.attributes[:n].float()

    def step():
        model.train()
        for i in range(0, n, 64):
            opt.zero_grad()
            loss, _ = objective.loss(model, x[i : i + 64], y[i : i + 64])
            loss.backward()
            opt.step()
        model.eval()

    rows.append(("training step (fwd+bwd+Adam)", None, timed(step) / forward))
    rows.append(
        ("ChannelRoles.fit", None, timed(lambda: ChannelRoles(n=n).fit(model, test)) / forward)
    )
    c = model.feature_channels
    orders = {"random": [random_order(c, s) for s in range(3)]}
    counts = [0, c // 4, c // 2, 3 * c // 4]
    sweep = timed(lambda: pruning_sweep(model, test, orders, counts, n=n))
    points = len(counts) * 3
    rows.append(
        (f"pruning_sweep, {points} points (floor {points} forwards)", None, sweep / forward)
    )
    stds, transforms = (0.0, 0.25, 0.5), ((1, 0), (2, 0), (2, 0.2), (4, 0.5))
    grid = timed(lambda: robustness_grid(model, test, stds=stds, transforms=transforms, n=n))
    naive = len(stds) * len(transforms)
    rows.append((f"robustness_grid, 3 x 4 (floor {naive} forwards)", None, grid / forward))
    pred = timed(
        lambda: attention_predictability(model, test, sizes=(16, 64), repeats=2, n=n, seed=0)
    )
    rows.append(("attention_predictability, 8 edits (floor 8 forwards)", None, pred / forward))
    print(f"{n} images of {tuple(x.shape[1:])}, {torch.get_num_threads()} threads")
    print("| computation | ms per image | time / forwards of the images |")
    print("|---|---:|---:|")
    for name, ms, ratio in rows:
        print(f"| {name} | {'' if ms is None else f'{ms:.2f}'} | {ratio:.2f} |")


if __name__ == "__main__":
    main()

"""``torch.compile`` (inductor, CPU) of a model against cnnlens' fast copies, for jobs.

    python benchmarks/compile.py [--models resnet20,vgg11] [--batch 32] [--threads 1]
                                 [--rounds 10] [--backward/--no-backward]

Whether a job's forward-only chunks should run through the public ``torch.compile``
(``cnnlens run --compile``). Rows per model and batch, interleaved in one process,
best of ``--rounds`` rounds:

* forward-only chunks (no autograd): the model as given; ``fast_copy(kind="forward")``
  (BatchNorm folded, channels-last, ReLUs in place: the uncompiled path);
  ``torch.compile`` of the ``"folded"`` copy (inductor fuses each convolution with
  the ReLU / residual addition after it) and of the model as given;
* forward+backward to the input (gradient maps): the ``"exact"`` copy (channels-last)
  against ``torch.compile`` of it.

Each compiled row is checked against the model's logits (and input gradient), and
its one-time compile cost (the first call) is printed, with the best compiled
forward as a multiple of the uncompiled fast copy. (Issue 18 compared inductor
with the hand-written oneDNN fusion of ``cnnlens.fusion``, a private op: 1.07x its
time on ResNet-20, equal on VGG-11; issue 29 retired it.) Timings on a shared
machine are noisy: the script prints ``uptime``'s load average; rerun it on an idle
machine for numbers to quote.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from attribution import benchmark_model
from cnnlens import accel


def _seconds(run, x: torch.Tensor, backward: bool) -> float:
    """One forward (or forward+backward to the input) pass of ``run`` on ``x``, timed."""
    v = x.detach().clone().requires_grad_(backward)
    start = time.perf_counter()
    if backward:
        torch.autograd.grad(run(v).max(1).values.sum(), v)
    else:
        with torch.no_grad():
            run(v)
    return time.perf_counter() - start


def _best(rows: dict, x: torch.Tensor, rounds: int, backward: bool) -> dict[str, float]:
    best = dict.fromkeys(rows, float("inf"))
    for _ in range(rounds):
        for name, run in rows.items():
            best[name] = min(best[name], _seconds(run, x, backward))
    return best


def _compiled(
    module: torch.nn.Module, layout: torch.memory_format, x: torch.Tensor, backward: bool
):
    """``torch.compile(module)`` (inductor), warmed up on ``x``; (runner, compile seconds)."""
    compiled = torch.compile(module, backend="inductor", dynamic=False)

    def run(v: torch.Tensor) -> torch.Tensor:
        return compiled(v.contiguous(memory_format=layout))

    return run, _seconds(run, x, backward)


def forward_rows(model, x, rounds):
    fast = accel.fast_copy(model, x, "forward")
    folded = accel.fast_copy(model, x, "folded")
    rows = {"model as given": model}
    if fast is not None:
        rows["fast copy (forward)"] = accel.fast_runner(model, x, "forward")
    costs = {}
    if folded is not None:
        rows["compile(folded copy)"], costs["compile(folded copy)"] = _compiled(
            folded.module, folded.layout, x, False
        )
    rows["compile(model)"], costs["compile(model)"] = _compiled(
        model, torch.contiguous_format, x, False
    )
    with torch.no_grad():
        expected = model(x)
        for name, run in rows.items():
            if not accel.same_outputs(run(x), expected):
                raise SystemExit(f"{name}: logits differ from the model's")
    return _best(rows, x, rounds, False), costs


def backward_rows(model, x, rounds):
    exact = accel.fast_copy(model, x, "exact")
    rows = {"model as given": model}
    costs = {}
    if exact is not None:
        rows["exact copy (today)"] = accel.fast_runner(model, x, "exact")
        rows["compile(exact copy)"], costs["compile(exact copy)"] = _compiled(
            exact.module, exact.layout, x, True
        )
    rows["compile(model)"], costs["compile(model)"] = _compiled(
        model, torch.contiguous_format, x, True
    )
    v = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(model(v).max(1).values.sum(), v)
    for name, run in rows.items():
        v = x.clone().requires_grad_(True)
        (got,) = torch.autograd.grad(run(v).max(1).values.sum(), v)
        # relative L2 error: a ReLU whose input is within rounding of 0 may flip in a
        # reordered computation and move one image's gradient (cnnlens.accel.fast)
        if float((got - want).norm() / want.norm()) > 1e-2:
            raise SystemExit(f"{name}: input gradient differs from the model's")
    return _best(rows, x, rounds, True), costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet20,vgg11")
    parser.add_argument("--batch", default="32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--backward", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), best of {args.rounds}; "
        f"load average before: {os.getloadavg()}"
    )
    verdict = {}
    for name in args.models.split(","):
        model = benchmark_model(name)
        for batch in (int(b) for b in args.batch.split(",")):
            x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(2))
            parts = [("forward", forward_rows)] + (
                [("fwd+bwd", backward_rows)] if args.backward else []
            )
            for kind, rows_of in parts:
                best, costs = rows_of(model, x, args.rounds)
                base = best["model as given"]
                print(f"\n{name}, batch {batch}, {kind}")
                print("| run | ms / image | x model | compile s |")
                print("|---|---|---|---|")
                for row, seconds in best.items():
                    cost = f"{costs[row]:.1f}" if row in costs else "–"
                    print(
                        f"| {row} | {1e3 * seconds / batch:.3f} | {seconds / base:.2f} | {cost} |"
                    )
                if kind == "forward" and "fast copy (forward)" in best:
                    compiled = min(v for k, v in best.items() if k.startswith("compile"))
                    ratio = compiled / best["fast copy (forward)"]
                    verdict[(name, batch)] = ratio
                    print(f"best compiled / uncompiled fast copy: {ratio:.3f}")
    print(f"\nload average after: {os.getloadavg()}")
    if verdict:
        faster = all(r < 1.0 for r in verdict.values())
        print(
            "compiled forward faster than the uncompiled fast copy on every model: "
            + ("yes (long jobs compile)" if faster else "no")
        )


if __name__ == "__main__":
    main()

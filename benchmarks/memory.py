"""Peak memory of the expanding methods under a memory budget: cnnlens vs Captum.

    python benchmarks/memory.py [--images 16] [--steps 50] [--masks 4000]
                                [--budget 2GiB] [--threads 2] [--cases ig,rise,captum-ig]

Model: ResNet-50 (``cnnlens.nets.create("resnet50", num_classes=1000)``, random
weights, eval) at 224 px, ``--images`` random images, target class i for image i.
Each case runs in a fresh process: the model and inputs are made, the process's
resident memory is read (the baseline), its peak is reset (``/proc/self/clear_refs``),
the case runs, and the peak resident memory (``VmHWM``) less the baseline is
reported with the wall time. Cases: cnnlens Integrated Gradients (``--steps``,
Gauss-Legendre) and RISE (``--masks``, s=8, p1=0.5) with ``memory=--budget``, and
Captum's IntegratedGradients with ``internal_batch_size`` = the chunk cnnlens
finds fits the same budget (its own default would run images x steps at once).

The peak of a chunked method is set by its chunk, not by the number of chunks:
fewer images, steps or masks measure the same peak in less time (the table says
what ran). Not a test: a shared machine's numbers are noisy in time, not in memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CASES = ("ig", "rise", "captum-ig")


def status_mib(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> bool:
    """Reset the peak resident memory to the current one (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def child(args: argparse.Namespace) -> dict:
    """Run one case in this (fresh) process; what it measured."""
    import gc

    import torch

    from cnnlens import nets
    from cnnlens.chunking import chunk_size, parse_memory

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nets.create("resnet50", num_classes=1000).eval()
    x = torch.randn(args.images, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    target = torch.arange(args.images) % 1000
    budget = parse_memory(args.budget)
    chunk = chunk_size(model, x[:1], backward=args.case != "rise", memory=budget)
    gc.collect()
    baseline = status_mib("VmRSS")
    exact = reset_peak()
    start = time.perf_counter()
    if args.case == "captum-ig":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from captum.attr import IntegratedGradients

        for p in model.parameters():
            p.requires_grad_(False)
        maps = IntegratedGradients(model).attribute(
            x, target=target, n_steps=args.steps, internal_batch_size=chunk
        )
        settings = f"steps={args.steps}, internal_batch_size={chunk}"
    else:
        from cnnlens import explain

        if args.case == "ig":
            hp = {"steps": args.steps}
            settings = f"steps={args.steps}, memory={args.budget} (chunk {chunk})"
        else:
            hp = {"n_masks": args.masks, "s": 8, "p1": 0.5}
            settings = f"n_masks={args.masks}, memory={args.budget} (chunk {chunk})"
        name = "integrated-gradients" if args.case == "ig" else "rise"
        maps = explain(model, x, name, target=target, memory=budget, **hp).maps
    seconds = time.perf_counter() - start
    peak = status_mib("VmHWM") if exact else None
    return {
        "case": args.case,
        "settings": settings,
        "images": args.images,
        "baseline_mib": baseline,
        "peak_above_mib": None if peak is None else peak - baseline,
        "peak_mib": status_mib("VmHWM"),  # the process's whole peak (exact only if reset)
        "budget_mib": budget / 2**20,
        "seconds": seconds,
        "finite": bool(torch.isfinite(maps).all()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50, help="Integrated Gradients steps")
    parser.add_argument("--masks", type=int, default=4000, help="RISE masks")
    parser.add_argument("--budget", default="2GiB", help="memory= of the cnnlens cases")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma list of " + ", ".join(CASES)
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)  # the child process's one case
    args = parser.parse_args()
    if args.case:
        print(json.dumps(child(args)))
        return
    print(
        f"ResNet-50 224 px, {args.images} images, {args.threads} thread(s); peak RSS of a "
        "fresh process per case, above its RSS with the model and inputs loaded"
    )
    print(
        "| case | settings | baseline MiB | peak above baseline MiB | peak RSS MiB "
        "| budget MiB | s |"
    )
    print("|---|---|---|---|---|---|---|")
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; known: {', '.join(CASES)}")
        command = [sys.executable, __file__, *sys.argv[1:], "--case", case]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"| {case} | failed: {proc.stderr.strip().splitlines()[-1:]} | | | | | |")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        peak = "?" if r["peak_above_mib"] is None else f"{r['peak_above_mib']:.0f}"
        print(
            f"| {case} | {r['settings']} | {r['baseline_mib']:.0f} | {peak} "
            f"| {r['peak_mib']:.0f} | {r['budget_mib']:.0f} | {r['seconds']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

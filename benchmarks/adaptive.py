"""RISE with fewer passes (issue 33, item 5): the convergence stop and better masks
against the full fixed count, on ``shapes``.

    python benchmarks/adaptive.py [--model runs/x] [--n 4] [--full 8000] [--tolerance 0.25]
                                  [--block 64] [--threads 2] [--noise]
                                  [--surrogates 2000 --surrogate-tolerance 0.02] [--skip-rise]

Model: ``--model`` (a saved model or run folder), else ResNet-20 trained on
``shapes`` with the demo config cut to 2 epochs into ``runs/adaptive-shapes``
(reused when there). Images: the first ``--n`` test images, target the true class.
Reference: RISE's default sampling with ``--full`` masks (s = 8, p1 = 0.5, seed 0).
Each setting runs with ``tolerance``; reported per setting: masks (= model passes)
spent per image, the factor saved against ``--full``, the deletion AUC difference
from the reference map's (mean and max over images; goal <= 0.01) and the
Spearman rank correlation of the map with the reference map (mean and min; goal
>= 0.95) and the Pearson correlation ``r`` (mean). A second full run with another
seed shows how far the reference itself
is from converged (``--noise``, doubles the reference cost). ``--surrogates N``
does the same for LIME and Kernel SHAP against ``N`` samples. ``--fixed M``
runs each sampling at ``M`` masks without the stop (equal-cost comparison).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from scipy.stats import spearmanr

SETTINGS = {
    "random": {},
    "sobol": {"sampling": "sobol"},
    "antithetic": {"antithetic": True},
    "sobol + antithetic": {"sampling": "sobol", "antithetic": True},
}


def trained_model(path: str | None):
    import cnnlens
    from cnnlens.train.classifier import DEMO_CONFIG, train_classifier

    if path:
        return cnnlens.load(path), path
    out = "runs/adaptive-shapes"
    try:
        return cnnlens.load(out), f"{out} (reused)"
    except Exception:
        config = dataclasses.replace(DEMO_CONFIG, epochs=2)
        run = train_classifier(data="shapes", arch="resnet20", out=out, config=config)
        return run.model, f"{out} (test accuracy {run.test_accuracy:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--full", type=int, default=8000)
    ap.add_argument("--tolerance", type=float, default=0.25)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--noise", action="store_true")
    ap.add_argument("--surrogates", type=int, default=0, help="LIME/SHAP full n_samples (0: skip)")
    ap.add_argument("--surrogate-tolerance", type=float, default=0.02)
    ap.add_argument("--skip-rise", action="store_true")
    ap.add_argument("--fixed", type=int, default=0, help="no tolerance: this many masks each")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import cnnlens
    from cnnlens.data import load
    from cnnlens.metrics import deletion

    model, where = trained_model(args.model)
    model.eval()
    x, y = load("shapes", split="test").tensors(range(args.n))
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    print(f"model {where}; {args.n} test images, accuracy on them {accuracy:.3f}")

    def auc(maps):
        return deletion(model, x, maps, y).values.double()

    def rho(a, b):
        return [float(spearmanr(a[i].flatten(), b[i].flatten())[0]) for i in range(len(a))]

    def pearson(a, b):
        return sum(
            float(torch.corrcoef(torch.stack([a[i].flatten(), b[i].flatten()]))[0, 1])
            for i in range(len(a))
        ) / len(a)

    if args.surrogates:
        surrogates(cnnlens, model, x, y, args, auc, rho, pearson)
    if args.skip_rise:
        return
    start = time.perf_counter()
    full = cnnlens.explain(model, x, method="rise", n_masks=args.full, target=y).maps
    seconds = time.perf_counter() - start
    full_auc = auc(full)
    rows = [("full (reference)", args.full, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, seconds)]
    if args.noise:
        other = cnnlens.explain(model, x, method="rise", n_masks=args.full, target=y, seed=1).maps
        d, r = (auc(other) - full_auc).abs(), rho(other, full)
        p = pearson(other, full)
        rows.append(
            ("full, seed 1", args.full, 1.0, d.mean(), d.max(), sum(r) / len(r), min(r), p, 0)
        )
    for name, params in SETTINGS.items():
        start = time.perf_counter()
        e = cnnlens.explain(
            model,
            x,
            method="rise",
            n_masks=args.fixed or args.full,
            target=y,
            **({} if args.fixed else {"tolerance": args.tolerance, "block": args.block}),
            **params,
        )
        seconds = time.perf_counter() - start
        spent = float(args.fixed) if args.fixed else e.extras["passes"].double().mean().item()
        d, r = (auc(e.maps) - full_auc).abs(), rho(e.maps, full)
        p = pearson(e.maps, full)
        rows.append(
            (name, spent, args.full / spent, d.mean(), d.max(), sum(r) / len(r), min(r), p, seconds)
        )
        print(f"  {name}: {seconds:.1f} s", flush=True)
    rule = f"fixed {args.fixed} masks" if args.fixed else f"tolerance {args.tolerance}"
    print(f"\n{rule} (noise-to-signal), block {args.block}, full {args.full}")
    print("| setting | passes/image | saved | dAUC mean | dAUC max | rho mean | rho min | r | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, spent, saved, dm, dx, rm, rn, pr, s in rows:
        print(
            f"| {name} | {spent:.0f} | {saved:.1f}x | {float(dm):.4f} | {float(dx):.4f} "
            f"| {rm:.3f} | {rn:.3f} | {pr:.3f} | {s:.0f} |"
        )


def surrogates(cnnlens, model, x, y, args, auc, rho, pearson) -> None:
    """LIME and Kernel SHAP (slic segments) with ``--surrogate-tolerance`` against
    ``--surrogates`` samples (same seed, so the stopped fit uses a prefix of the
    full fit's coalitions)."""
    full_n, tol = args.surrogates, args.surrogate_tolerance
    print(f"\nsurrogates: tolerance {tol} (relative coefficient change), block 100, full {full_n}")
    print("| method | passes/image | saved | dAUC mean | dAUC max | rho mean | rho min | r | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in ("lime", "kernel-shap"):
        start = time.perf_counter()
        full = cnnlens.explain(model, x, method=method, n_samples=full_n, target=y).maps
        full_s = time.perf_counter() - start
        start = time.perf_counter()
        e = cnnlens.explain(model, x, method=method, n_samples=full_n, target=y, tolerance=tol)
        seconds = time.perf_counter() - start
        spent = e.extras["passes"].double().mean().item()
        d, r = (auc(e.maps) - auc(full)).abs(), rho(e.maps, full)
        print(f"| {method} full | {full_n} | 1.0x | 0 | 0 | 1.000 | 1.000 | 1.000 | {full_s:.0f} |")
        print(
            f"| {method} tolerance | {spent:.0f} | {full_n / spent:.1f}x | {float(d.mean()):.4f} "
            f"| {float(d.max()):.4f} | {sum(r) / len(r):.3f} | {min(r):.3f} "
            f"| {pearson(e.maps, full):.3f} | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

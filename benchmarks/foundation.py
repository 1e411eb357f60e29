"""Measurements for the foundation: the demo recipe on shapes and digits, the
pixel logistic-regression baseline and the object-removed accuracy.

    python benchmarks/foundation.py [--data shapes,digits] [--lr] [--out runs/foundation]

Reuses runs in ``--out`` (same recipe, same data) instead of training again.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cnnlens.data.checks import pixel_logistic_regression
from cnnlens.train.classifier import DEMO_CONFIG, train_classifier
from cnnlens.train.loop import object_removed_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="shapes,digits")
    parser.add_argument("--lr", action="store_true", help="also fit the pixel logistic regression")
    parser.add_argument("--out", default="runs/foundation")
    args = parser.parse_args()
    rows = []
    for name in [d for d in args.data.split(",") if d]:
        run = train_classifier(
            data=name, arch="resnet20", out=Path(args.out) / name, config=DEMO_CONFIG
        )
        row = {
            "data": name,
            "test accuracy": f"{100 * run.test_accuracy:.2f} %",
            "training s": f"{run.seconds:.0f}" if not run.reused else "reused",
        }
        if hasattr(run.test, "without_object"):
            _, without = object_removed_accuracy(run.model, run.test)
            row["object removed"] = f"{100 * without:.2f} %"
        rows.append(row)
        print(row, flush=True)
    if args.lr:
        t0 = time.perf_counter()
        acc = pixel_logistic_regression()
        print(
            f"pixel logistic regression on shapes: {100 * acc:.2f} % "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()

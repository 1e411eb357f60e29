"""Paper 003, Table 3 as cnnlens can run it: attribute network vs plain CNN vs ResNet-18.

    python benchmarks/attribute_models.py --out /tmp/attr-models [--epochs 3] [--threads 2]

Trains (or reuses, from ``--out/<kind>``) the three multi-attribute models of
:func:`cnnlens.studies.channel_roles.study.model_comparison` on ``shapes`` attributes with
the attribute recipe (16 px, 2500 training and 1000 test images, 3 epochs, Adam 3e-3
one-cycle, seed 0: the same budget for each) and prints the per-attribute and mean test
accuracy (``comparison.json`` and ``comparison.md`` in ``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    from cnnlens.studies.channel_roles.study import comparison_table, model_comparison
    from cnnlens.studies.channel_roles.training import SHAPES_RECIPE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/attr-models")
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--epochs", type=int, default=SHAPES_RECIPE["epochs"])
    parser.add_argument("--n-train", type=int, default=SHAPES_RECIPE["n_train"])
    parser.add_argument("--n-test", type=int, default=SHAPES_RECIPE["n_test"])
    parser.add_argument("--size", type=int, default=SHAPES_RECIPE["size"])
    parser.add_argument("--kinds", default="attention,plain,resnet18")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.perf_counter()
    result = model_comparison(
        out, kinds=tuple(args.kinds.split(",")), data=args.data, size=args.size,
        n_train=args.n_train, n_test=args.n_test, epochs=args.epochs,
    )  # fmt: skip
    table = comparison_table(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(result, indent=1))
    (out / "comparison.md").write_text(table + "\n")
    print(table)
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Closing-note numbers of issue 6 (paper 002) on this machine.

Usage (models trained with the demo recipe first, e.g.
``cnnlens train --data shapes --arch resnet20 --epochs 8 --out runs/shapes-resnet20``)::

    python benchmarks/decompose_study.py --run shapes=runs/shapes-resnet20 \
        --run digits=runs/digits-resnet20 --retrain 3 [--depth runs/depth]

For each model it runs the whole analysis (:func:`cnnlens.studies.decompose.run_decompose`,
the same as ``cnnlens decompose``) into ``RUN/decompose`` and prints A_f, A_d,
r_A, the sweep, retraining accuracy per epoch, the noise ablation, in-mask
energy and mean class overlap; with ``--depth`` it prints the depth table
written by ``cnnlens decompose-depth``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import cnnlens
from cnnlens.analysis.tables import to_markdown
from cnnlens.studies.decompose import run_decompose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], help="DATA=RUN_FOLDER")
    parser.add_argument("--retrain", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--depth", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="print existing summaries only")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    for spec in args.run:
        data, _, folder = spec.partition("=")
        out = Path(folder) / "decompose"
        if args.reuse and (out / "summary.json").is_file():
            summary = json.loads((out / "summary.json").read_text())
        else:
            summary = run_decompose(
                cnnlens.load(folder),
                data=data,
                out=out,
                seeds=args.seeds,
                retrain_epochs=args.retrain,
            )
        print(f"\n## {data} ({folder})\n")
        print(to_markdown([summary["relative"]]))
        sweep = json.loads((out / "sweep.json").read_text())
        print(
            to_markdown([{k: r[k] for k in ("k1", "k2", "A_d", "r_A", "coverage")} for r in sweep])
        )
        if summary.get("retrain"):
            print(to_markdown(summary["retrain"]))
        print(to_markdown(json.loads((out / "ablation.json").read_text())))
        if summary.get("in_mask_energy"):
            print(to_markdown([summary["in_mask_energy"]]))
        print(f"mean class overlap (Jaccard): {summary['mean_overlap']:.4f}")
        print(f"mean coverage: {summary['mean_coverage']:.4f}; seconds {summary['seconds']:.0f}")
    if args.depth is not None and (args.depth / "depth.json").is_file():
        print("\n## depth study\n")
        print(to_markdown(json.loads((args.depth / "depth.json").read_text())))


if __name__ == "__main__":
    main()

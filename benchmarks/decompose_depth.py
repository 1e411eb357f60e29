"""r_A against depth for the ImageNet-shaped families (issue 34, paper 002 section 5.2.2).

Usage::

    python benchmarks/decompose_depth.py --out runs/depth-families \\
        [--arch densenet121,efficientnet_b0,resnet18,mobilenet_v2,resnet50] \\
        [--size 32] [--images 2500] [--epochs 6] [--ratio 0.078125,0.0244140625]

Trains (or reuses, by identity: :func:`cnnlens.train.classifier.train_classifier`) each
family on ``shapes`` at ``--size`` px (``--images`` per split) with the demo recipe at
batch 32 with AdamW (:data:`RECIPE`), then measures r_A at every depth point of the
network (:mod:`cnnlens.studies.decompose.stages`: each stage's pooled output read by a
linear probe, decomposed with k1 = k2 =
round(ratio x m) for each ``--ratio``; at the head's input also the network's own head).
Writes ``depth.json`` (rows and each model's test accuracy) and ``depth.png`` (the first
ratio; ``depth-ratio<r>.png`` the others) into ``--out``; prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from cnnlens.analysis.tables import to_markdown
from cnnlens.io import write_bytes, write_json
from cnnlens.plotting import to_png
from cnnlens.runs import measured
from cnnlens.studies.decompose.plots import family_depth_plot
from cnnlens.studies.decompose.stages import depth_points, stage_depth
from cnnlens.train import OptimizerConfig
from cnnlens.train.classifier import classifier_identity, demo_config, train_classifier

FAMILIES = "densenet121,efficientnet_b0,resnet18,mobilenet_v2,resnet50"
# The demo recipe (SGD 0.1, batch 128) left DenseNet-121 and EfficientNet-B0 near chance
# (16.8 % and 14.7 % test accuracy on 8 classes) after 4 epochs of 2,500 images at 32 px:
# 80 steps. Batch 32 and AdamW give these from-scratch ImageNet networks 4x the steps.
RECIPE = {"batch_size": 32, "optimizer": OptimizerConfig(name="adamw", lr=2e-3, weight_decay=0.05)}

KEYS = (
    "family",
    "ratio",
    "index",
    "layer",
    "depth",
    "m",
    "k1",
    "A_f",
    "A_d",
    "r_A",
    "A_f_head",
    "r_A_head",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/depth-families"))
    parser.add_argument("--arch", default=FAMILIES, help="comma list of ImageNet families")
    parser.add_argument("--size", type=int, default=32, help="shapes image size (px)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--images", type=int, default=2500, help="images per split (shapes n)")
    parser.add_argument(
        "--ratio",
        default="0.078125,0.0244140625",
        help="k / m, comma list (default: ResNet-20 on CIFAR's 5/64, the paper's ImageNet 50/2048)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 on a busy CPU)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted training")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(args.threads, torch.get_num_threads())))
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    ratios = [float(r) for r in args.ratio.split(",") if r.strip()]
    for arch in archs:
        depth_points(arch)  # unknown families refused before anything trains
    rows, models = [], {}
    for arch in archs:
        config = dataclasses.replace(demo_config(arch, epochs=args.epochs), **RECIPE)
        options = {"size": args.size, "n": args.images}
        run = train_classifier(
            data="shapes",
            arch=arch,
            out=args.out / arch,
            config=config,
            data_options=options,
            resume=args.resume,
        )

        def measure(run=run, arch=arch) -> dict:
            found = stage_depth(
                run.model, run.train, run.test, layers=depth_points(arch), ratio=ratios
            )
            return {"test_accuracy": run.test_accuracy, "rows": found}

        key = {"run": classifier_identity("shapes", arch, config, options), "ratios": ratios,
               "points": depth_points(arch)}  # fmt: skip
        result = measured(args.out / arch / "stage_depth.json", key, measure)
        models[arch] = {"test_accuracy": result["test_accuracy"], "epochs": args.epochs}
        rows += [{"family": arch, **row} for row in result["rows"]]
        print(f"{arch}: test accuracy {100 * result['test_accuracy']:.2f} %", flush=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_json(args.out / "depth.json", {"models": models, "settings": settings, "rows": rows})
    for i, ratio in enumerate(ratios):
        name = "depth.png" if i == 0 else f"depth-ratio{ratio:g}.png"
        write_bytes(
            args.out / name, to_png(family_depth_plot([r for r in rows if r["ratio"] == ratio]))
        )
    table = [{k: (round(r[k], 4) if isinstance(r.get(k), float) else r.get(k, "")) for k in KEYS}
             for r in rows]  # fmt: skip
    print(to_markdown(table))


if __name__ == "__main__":
    main()

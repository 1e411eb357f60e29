"""How many discovered concepts match a known ``shapes`` attribute, against random directions
(issue 32, item 4). Not a test: it prints and writes the counts.

    python benchmarks/concept_match.py --model runs/demo/model [--layers layer2,layer3]
        [--k 8] [--n 500] [--methods nmf,sae] [--seeds 3] [--out concept_match.json]

For each layer and method: a concept bank of ``--k`` concepts from the first ``--n`` test
images (:func:`cnnlens.analysis.discover_concepts`, seed 0), then
:func:`cnnlens.analysis.concept_match` on the same images: network dissection of each
concept's coefficient map against every concept mask of ``shapes`` (objects, background,
colours, stripes, ...); a concept *matches* when its best IoU is above the dissection
threshold (0.04, Bau et al.'s). The baseline treats ``--k`` random non-negative unit
directions alike (NNLS coefficients), one draw per seed ``0 .. --seeds-1``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import cnnlens
from cnnlens.analysis import concept_match, discover_concepts
from cnnlens.data import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--layers", default="layer2,layer3")
    parser.add_argument("--methods", default="nmf,sae")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="concept_match.json")
    args = parser.parse_args()
    model = cnnlens.load(args.model).eval()
    test = load("shapes", split="test").subset(range(args.n))
    x, y = test.tensors()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    print(f"model {args.model}: accuracy {100 * accuracy:.1f} % on the {args.n} images", flush=True)
    rows = []
    for layer in args.layers.split(","):
        for method in args.methods.split(","):
            start = time.perf_counter()
            bank = discover_concepts(model, test, layer, args.k, method=method, seed=0)
            random = []
            for seed in range(args.seeds):
                out = concept_match(model, test, bank, seed=seed)
                random.append(out["random"]["matched"])
            row = {"layer": layer, "method": method, "k": args.k, "error": bank.error,
                   "threshold": out["iou_threshold"], "discovered": out["discovered"],
                   "random_matched": random, "seconds": time.perf_counter() - start}  # fmt: skip
            rows.append(row)
            d = out["discovered"]
            print(f"{layer} {method}: {d['matched']}/{args.k} matched ({d['distinct']} distinct: "
                  f"{[lb for lb in d['labels'] if lb]}), best IoU "
                  f"{[round(v, 3) for v in d['best_iou']]}; random {random}/{args.k}; "
                  f"error {bank.error:.3f}; {row['seconds']:.0f} s", flush=True)  # fmt: skip
            with open(args.out, "w") as f:  # after every row: a stopped run keeps its rows
                json.dump({"model": args.model, "accuracy": accuracy, "n": args.n,
                           "rows": rows}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()

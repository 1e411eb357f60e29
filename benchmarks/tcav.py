"""TCAV (Kim et al. 2018) against Captum's ``captum.concept.TCAV`` on the same work.

    python benchmarks/tcav.py [--concepts striped,filled,large,red] [--random 5]
                              [--size 50] [--per-class 50] [--layer layer2.2]
                              [--threads 2] [--rounds 2]

The work, the same for both: a ResNet-20 (``benchmark_model``), concept sets of
``--size`` validation images of ``shapes`` per attribute, ``--random`` random sets
of the same size, one CAV per (concept, random set) and per pair of random sets,
at ``--layer``; then the sign-count and magnitude TCAV scores of every CAV for
``--per-class`` test images of each of the 8 classes (each image scored for its
label). cnnlens: ``TCAV(...).fit`` + ``.score`` (one forward per image for the
activations, one forward+backward per class image for every CAV at once).
Captum: its ``TCAV.interpret`` per class with its default classifier (scikit-
learn's SGD linear model) on experiment sets built from exactly the images
cnnlens drew, activations cached in a fresh folder each round. The CAVs differ
(SGD against an exact logistic regression), so the table also gives the mean
absolute difference of the sign-count scores. The floor is the model passes:
forwards of every concept and random image plus one forward+backward per class
image. Not a test: it prints seconds and ratios; best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import torch

from attribution import benchmark_model
from cnnlens.analysis import TCAV, shapes_concepts
from cnnlens.data import load
from cnnlens.hooks import capture_outputs, frozen


def cnnlens_tcav(model, concepts, val, test, args):
    tcav = TCAV(args.layer, n_random=args.random, random_size=args.size, seed=0)
    tcav.fit(model, concepts, random=val)
    return tcav, tcav.score(model, test)


def captum_tcav(model, tcav, test, args):
    """Captum's TCAV over the concept and random sets ``tcav`` drew; scores [C*R + pairs, K]."""
    from captum.concept import TCAV as CaptumTCAV
    from captum.concept import Concept
    from captum.concept._utils.common import concepts_to_str
    from torch.utils.data import DataLoader

    ids = iter(range(10_000))

    def concept(name, data, indices):
        images = data.tensors(indices)[0]
        return Concept(next(ids), name, DataLoader(images, batch_size=64))

    randoms = [concept(r.name, r.data, r.indices) for r in tcav.random_sets_]
    experiments = [
        [concept(c.name, c.data, c.indices), r] for c in tcav.concept_sets_ for r in randoms
    ]
    experiments += [[one, other] for i, one in enumerate(randoms) for other in randoms[i + 1 :]]
    x, y = test.tensors(range(len(test)))
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captum = CaptumTCAV(model, [args.layer], save_path=f"{folder}/")
        scores = []
        for k in range(test.num_classes):
            out = captum.interpret(x[y == k], experiments, target=k)
            scores.append(
                [float(out[concepts_to_str(e)][args.layer]["sign_count"][0]) for e in experiments]
            )
    return torch.tensor(scores, dtype=torch.float64).T


def floor(model, concepts, val, tcav, test, layer: str) -> float:
    """Seconds for the passes TCAV needs: forwards of the concept and random images, one
    forward+backward of every class image (to the layer's output)."""
    images = [c.images() for c in concepts.values()]
    images.append(val.tensors(torch.cat([r.indices for r in tcav.random_sets_]))[0])
    x, y = test.tensors(range(len(test)))
    start = time.perf_counter()
    with frozen(model), capture_outputs(model, [layer]), torch.no_grad():
        for batch in images:
            model(batch)
    with frozen(model), capture_outputs(model, [layer]) as outputs:
        x = x.clone().requires_grad_(True)
        logits = model(x)
        grad = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), outputs[layer])
    del grad
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concepts", default="striped,filled,large,red")
    parser.add_argument("--random", type=int, default=5)
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--layer", default="layer2.2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = benchmark_model("resnet20")
    val, test_all = load("shapes", split="val"), load("shapes", split="test")
    labels = test_all.tensors(range(len(test_all)))[1]
    chosen = torch.cat(
        [torch.nonzero(labels == k).flatten()[: args.per_class] for k in range(8)]
    ).sort()
    test = test_all.subset(chosen.values.tolist())
    concepts = shapes_concepts(val, args.concepts.split(","), n=args.size, seed=0)

    best = {"floor": float("inf"), "cnnlens": float("inf"), "captum": float("inf")}
    for _ in range(args.rounds):
        start = time.perf_counter()
        tcav, result = cnnlens_tcav(model, concepts, val, test, args)
        best["cnnlens"] = min(best["cnnlens"], time.perf_counter() - start)
        start = time.perf_counter()
        theirs = captum_tcav(model, tcav, test, args)
        best["captum"] = min(best["captum"], time.perf_counter() - start)
        best["floor"] = min(best["floor"], floor(model, concepts, val, tcav, test, args.layer))
    n_concepts, runs = len(concepts), args.random
    ours = torch.cat(
        [
            result.scores.reshape(n_concepts, -1, runs).permute(0, 2, 1).reshape(-1, 8),
            # our random CAVs are all ordered pairs (i, j), i != j; Captum got i < j
            torch.stack(
                [
                    result.random_scores[:, i * (runs - 1) + (j - 1)]
                    for i in range(runs)
                    for j in range(i + 1, runs)
                ]
            ),
        ]
    )
    fits = n_concepts * runs + runs * (runs - 1) // 2
    print(
        f"resnet20 (random weights), layer {args.layer}, {n_concepts} concepts x {runs} random "
        f"sets of {args.size} images ({fits} CAVs), {len(test)} class images, "
        f"{args.threads} thread(s), best of {args.rounds}"
    )
    print("| run | seconds | x floor | x cnnlens |")
    print("|---|---|---|---|")
    for name, seconds in best.items():
        print(
            f"| {name} | {seconds:.2f} | {seconds / best['floor']:.2f} | "
            f"{seconds / best['cnnlens']:.2f} |"
        )
    diff = (ours - theirs).abs()
    print(
        f"sign-count scores, cnnlens vs Captum (exact logistic vs SGD CAVs): mean |diff| "
        f"{float(diff.mean()):.3f}, max {float(diff.max()):.3f} over {diff.numel()} scores"
    )


if __name__ == "__main__":
    main()

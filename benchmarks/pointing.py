"""Pointing game on ``shapes`` for every attribution method (issues 3 and 4).

    python benchmarks/pointing.py [--model runs/x] [--n 64] [--threads 2] [--only a,b]

Model: ``--model`` (a saved model folder or run folder), or by default the
test fixture's recipe (ResNet-20, demo config shortened to 4 epochs) trained
once into ``runs/pointing-shapes`` and reused. Images: the first ``--n``
``shapes`` test images, target = the true class. A hit = the map's maximum
lies on the object mask (strict), or within the metric's default tolerance
(15 px at 224 scaled = 2 px at 32). Baseline: uniform random maps (seeded).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

SETTINGS = {
    "saliency": {},
    "input-x-gradient": {},
    "integrated-gradients": {"steps": 50},
    "smoothgrad": {"samples": 50},
    "guided-backprop": {},
    "deconvnet": {},
    "deeplift": {},
    "lrp": {"composite": "epsilon-plus"},
    "lrp ": {"rule": "epsilon"},
    "cam": {},
    "grad-cam": {},
    "grad-cam++": {},
    "score-cam": {},
    "guided-grad-cam": {},
    "layer-cam": {},
    "occlusion": {"window": 4, "stride": 2},
    "rise": {"n_masks": 500, "s": 8},
    "lime": {"n_samples": 200},
    "kernel-shap": {"n_samples": 200},
    "extremal-perturbation": {"iterations": 300},
    "meaningful-perturbation": {"iterations": 300},
    "iba": {"layer": "layer2"},
}


def trained_model(path: str | None):
    import cnnlens
    from cnnlens.train.classifier import DEMO_CONFIG, train_classifier

    if path:
        return cnnlens.load(path), path
    out = "runs/pointing-shapes"
    config = dataclasses.replace(DEMO_CONFIG, epochs=4)
    run = train_classifier(data="shapes", arch="resnet20", out=out, config=config)
    return run.model, f"{out} (test accuracy {run.test_accuracy:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import cnnlens
    from cnnlens.attribution.bottleneck import estimate_statistics
    from cnnlens.data import load
    from cnnlens.metrics.localisation import pointing_game

    model, where = trained_model(args.model)
    model.eval()
    test = load("shapes", split="test")
    idx = list(range(args.n))
    x, y = test.tensors(idx)
    masks = test.masks[idx]
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    print(f"model {where}; {args.n} test images, accuracy on them {accuracy:.3f}")
    train_x, _ = load("shapes", split="train").tensors(range(512))
    stats = estimate_statistics(model, "layer2", train_x)

    def score(maps: torch.Tensor) -> tuple[float, float]:
        strict = pointing_game(maps=maps, masks=masks, tolerance=0).values.mean().item()
        loose = pointing_game(maps=maps, masks=masks).values.mean().item()
        return strict, loose

    g = torch.Generator().manual_seed(0)
    rows = [("random map", "uniform noise", *score(torch.rand(args.n, 1, 32, 32, generator=g)), 0)]
    only = {s for s in args.only.split(",") if s}
    for method, params in SETTINGS.items():
        name = method.strip()  # "lrp " is a second setting of "lrp"
        if only and name not in only:
            continue
        extra = {"statistics": stats} if name == "iba" else {}
        start = time.perf_counter()
        e = cnnlens.explain(model, x, method=name, target=y, **params, **extra)
        seconds = time.perf_counter() - start
        rows.append((method, str(params), *score(e.maps), seconds))
        print(f"  {method}: {seconds:.1f} s", flush=True)
    print("| method | settings | hit rate (strict) | hit rate (2 px tolerance) | seconds |")
    print("|---|---|---|---|---|")
    for method, settings, strict, loose, seconds in rows:
        print(f"| {method} | {settings} | {strict:.3f} | {loose:.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()

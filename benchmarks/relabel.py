"""Re-label distillation (paper 004) against the other methods, its t-SNE and its cost.

    python benchmarks/relabel.py --data shapes --model runs/demo --n 200 --out /tmp/relabel-eval
    python benchmarks/relabel.py --data digits --model /tmp/relabel-digits --n 200 --out ...
        [--parts eval,tsne,timing] [--threads 2] [--vae FOLDER]

* ``eval``: deletion and insertion (RISE protocol, :mod:`cnnlens.metrics`) of
  relabel, Grad-CAM, occlusion (sliding window), LIME, RISE, FGVis, extremal
  perturbation, the linear approximation, Excitation Backprop and the random (and Sobel)
  baselines on the first ``--n`` test
  images, target = the model's top-1 (paper 004, Table 1); on ``shapes`` also
  the bounding-box score and the pointing game. Through ``cnnlens.evaluate``
  with ``out``: resumable, ``summary.md`` written. Settings: relabel at the
  paper's n = 1000 and its defaults; RISE 2000 masks (s = 8, p1 = 0.5);
  LIME 1000 samples; occlusion 4x4 windows, stride 4; extremal perturbation
  300 iterations (its default, 800, would dominate the run on 2 cores); FGVis
  preservation game, 150 iterations (``--fgvis-iterations``), its defence on.
* ``tsne``: the synthetic images of one test image, their teacher features
  (penultimate layer) embedded by scikit-learn's t-SNE, coloured by ``y'``
  (paper 004, Fig. 3): ``tsne-<data>.png``.
* ``timing``: relabel on 16 images (best of 2 interleaved rounds): seconds per
  explanation, the share of
  ``y' = 1``, scales tried, and the time as a multiple of the model-pass floor
  (``n`` teacher forwards + one VAE decode of ``n`` per image, each at the best
  chunk, timed in the same run).

The VAE is ``--vae``, else ``<out>/vae-<data>`` trained there once
(:func:`cnnlens.studies.relabel.train_vae`, reused afterwards).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

METHODS = [
    "relabel", "grad-cam", "occlusion", "lime", "rise", "fgvis", "extremal-perturbation",
    "linear-approx", "excitation-backprop",
]  # fmt: skip
PARAMS = {
    "rise": {"n_masks": 2000},
    "lime": {"n_samples": 1000},
    "occlusion": {"window": 4, "stride": 4},
    "extremal-perturbation": {"iterations": 300},
    "fgvis": {"iterations": 150},
}


def setup(args):
    import cnnlens
    from cnnlens.data import load
    from cnnlens.studies.relabel import open_vae, train_vae, vae_folder

    model = cnnlens.load(args.model).eval()
    test = load(args.data, split="test")
    folder = Path(args.vae) if args.vae else vae_folder(args.out, args.data)
    if not (folder / "model" / "model.json").is_file():
        trained = train_vae(args.data, out=folder)
        print(f"VAE trained in {trained.seconds:.0f} s: {trained.quality}")
    vae = open_vae(folder)
    return model, test, vae, folder


def part_eval(args, model, test, folder) -> None:
    from cnnlens.metrics.evaluate import evaluate
    from cnnlens.metrics.outputs import write_evaluation

    x, _ = test.tensors(range(args.n))
    metrics = ["deletion", "insertion"]
    boxes = masks = None
    if test.boxes is not None or test.masks is not None:
        metrics += ["bbox-score", "pointing-game"]
        boxes = None if test.boxes is None else test.boxes[: args.n]
        masks = None if test.masks is None else test.masks[: args.n]
    params = {**PARAMS, "relabel": {"vae": str(folder)}}
    params["fgvis"] = {"iterations": args.fgvis_iterations}
    methods = [m for m in METHODS if m in args.methods.split(",")] if args.methods else METHODS
    out = Path(args.out) / f"eval-{args.data}"
    t0 = time.perf_counter()
    ev = evaluate(
        model, x, methods=methods, metrics=metrics, boxes=boxes, masks=masks,
        method_params=params, chunk=20,
    )  # fmt: skip
    write_evaluation(ev, out)
    print(f"evaluation of {args.n} {args.data} images in {time.perf_counter() - t0:.0f} s")
    print(ev.markdown())


def part_tsne(args, model, test, vae) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    from cnnlens.layers import penultimate_features
    from cnnlens.studies.relabel.distiller import synthetic_set

    x, _ = test.tensors([args.index])
    synthetic, hard, scale = synthetic_set(model, vae, x, n=1000, seed=0)
    with torch.no_grad():
        feats = torch.cat(
            [penultimate_features(model, synthetic[i : i + 250]) for i in range(0, 1000, 250)]
        )
    xy = TSNE(n_components=2, init="pca", random_state=0, perplexity=30).fit_transform(
        feats.numpy()
    )
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=110)
    for label, colour in ((1, "tab:red"), (0, "tab:blue")):
        pick = hard.numpy() == label
        ax.scatter(xy[pick, 0], xy[pick, 1], s=6, c=colour, label=f"y'={label} ({pick.sum()})")
    ax.set_title(f"{args.data} test image {args.index}: 1000 VAE samples, scale {scale:.3g}")
    ax.legend(loc="best")
    ax.set_xticks([]), ax.set_yticks([])
    path = Path(args.out) / f"tsne-{args.data}.png"
    fig.savefig(path, bbox_inches="tight")
    print(f"t-SNE of teacher features: {path} (share of y'=1: {float(hard.mean()):.3f})")


def part_timing(args, model, test, vae) -> None:
    from cnnlens import explain
    from cnnlens.accel import forward_runner
    from cnnlens.chunking import chunk_size, run_chunked
    from cnnlens.studies.relabel.synthesis import decode_perturbed, encode

    images, n = args.timing_images, 1000
    x, _ = test.tensors(range(images))
    explain(model, x[:2], method="relabel", vae=vae, n=50)  # warm-up: fast copies, caches
    mu, sigma = encode(vae, x)
    eps = torch.randn(images, n, mu.shape[1], generator=torch.Generator().manual_seed(0))
    run = forward_runner(model, x[:1])
    size = chunk_size(model, x[:1], backward=False)
    took = decode_s = forward_s = float("inf")
    for _round in range(args.rounds):  # interleaved; the best of each (a shared CPU is noisy)
        t0 = time.perf_counter()
        e = explain(model, x, method="relabel", vae=vae, n=n)
        took = min(took, time.perf_counter() - t0)
        # the floor: one decode of n per image, n forwards per image through the same fast copy
        t0 = time.perf_counter()
        synthetic = decode_perturbed(vae, mu, sigma, eps, torch.ones(images))
        decode_s = min(decode_s, time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_chunked(lambda a, b, s=synthetic: run(s[a:b])[:, :1], len(synthetic), size)
        forward_s = min(forward_s, time.perf_counter() - t0)
    floor = decode_s + forward_s
    share, tries = e.extras["share"], e.extras["tries"]
    result = {
        "data": args.data,
        "images": images,
        "rounds": args.rounds,
        "n": n,
        "seconds_per_explanation": took / images,
        "floor_seconds_per_image": floor / images,
        "decode_seconds_per_image": decode_s / images,
        "forward_seconds_per_image": forward_s / images,
        "multiple_of_floor": took / floor,
        "share_mean": float(share.mean()),
        "share_min": float(share.min()),
        "share_max": float(share.max()),
        "share_in_band": float(((share >= 0.1) & (share <= 0.9)).float().mean()),
        "scales_tried_mean": float(tries.mean()),
        "scale_median": float(e.extras["scale"].median()),
        "student_fidelity_mean": float(e.extras["fidelity"].mean()),
        "threads": torch.get_num_threads(),
    }
    (Path(args.out) / f"timing-{args.data}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--model", required=True)
    parser.add_argument("--vae", default=None)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--index", type=int, default=0, help="test image of the t-SNE")
    parser.add_argument("--out", default="/tmp/relabel-eval")
    parser.add_argument("--parts", default="eval,tsne,timing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timing-images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fgvis-iterations", type=int, default=150)
    parser.add_argument("--methods", default="", help="comma-separated subset of METHODS")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    model, test, vae, folder = setup(args)
    parts = args.parts.split(",")
    if "timing" in parts:
        part_timing(args, model, test, vae)
    if "tsne" in parts:
        part_tsne(args, model, test, vae)
    if "eval" in parts:
        part_eval(args, model, test, folder)


if __name__ == "__main__":
    main()

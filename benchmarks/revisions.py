"""Attribution speed of two revisions of cnnlens, measured in one run (issue 29's before/after).

    python benchmarks/revisions.py --before 7a0b0d5 [--after WORKTREE] [--rounds 4]
                                   [--arch resnet20] [--size 32] [--images 16]
                                   [--threads 1] [--only grad-cam,lrp]

The source tree of ``--before`` (a git revision of this repository) is exported to a
temporary folder; ``--after`` is a source tree (default: this checkout). Each round runs
one child process per revision, alternating which goes first, and each child times every
method both revisions have on the same model (``--arch`` with random weights, seed 0, in
eval mode), the same ``shapes`` test images and targets, after one untimed warm-up call:
the child reports the best of ``--repeats`` calls. A method's time is its median over
the rounds; the table gives both and after / before. Noise on a shared CPU reaches a few
per cent: run it on a quiet machine and read the ratios of one run together.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Settings that keep every method to a few model passes' worth of work at 32 px.
SETTINGS = {
    "integrated-gradients": {"steps": 32},
    "smoothgrad": {"samples": 16},
    "occlusion": {"window": 8, "stride": 4},
    "rise": {"n_masks": 256},
    "lime": {"n_samples": 128},
    "kernel-shap": {"n_samples": 128},
    "extremal-perturbation": {"iterations": 30},
    "meaningful-perturbation": {"iterations": 30},
    "iba": {"steps": 10},
}
SKIP = {"relabel"}  # needs a trained VAE

CHILD = r"""
import json, sys, time, warnings
import torch
warnings.filterwarnings("ignore")
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
import cnnlens
import cnnlens.attribution
from cnnlens import nets
from cnnlens.data import load
torch.manual_seed(0)
model = nets.create(args["arch"], num_classes=8, in_channels=3).eval()
test = load("shapes", split="test")
x, _ = test.tensors(range(args["images"]))
if x.shape[-1] != args["size"]:
    x = torch.nn.functional.interpolate(x, size=args["size"], mode="bilinear")
target = torch.arange(args["images"]) % 8
if args["list"]:
    print(json.dumps(sorted(cnnlens.methods())))
    raise SystemExit
out = {}
for name in args["methods"]:
    params = dict(args["settings"].get(name, {}))
    method = cnnlens.attribution.get(name)
    declared = getattr(method, "hyperparameters", None) or getattr(method, "defaults", None) or {}
    if "seed" in declared:
        params["seed"] = 0
    def call():
        return cnnlens.explain(model, x, name, target=target, **params)
    try:
        call()
    except Exception as exc:  # a method one revision cannot run at these settings
        out[name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:160]}
        continue
    best = float("inf")
    for _ in range(args["repeats"]):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    out[name] = {"seconds": best}
print(json.dumps(out))
"""


def export(revision: str, into: Path) -> Path:
    """The ``src`` tree of ``revision`` (``git archive``) under ``into``."""
    archive = into / "src.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def child(src: Path, payload: dict) -> dict | list:
    env = {**os.environ, "PYTHONPATH": str(src), "CNNLENS_QUIET": "1"}
    env["OMP_NUM_THREADS"] = str(payload["threads"])
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(payload)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"child on {src} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a git revision of this repository")
    parser.add_argument("--after", default=str(ROOT / "src"), help="a source tree")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    base = {
        "arch": args.arch,
        "size": args.size,
        "images": args.images,
        "threads": args.threads,
        "repeats": args.repeats,
        "settings": SETTINGS,
    }
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": export(args.before, Path(tmp)), "after": Path(args.after)}
        listed = [set(child(src, {**base, "list": True, "methods": []})) for src in trees.values()]
        methods = sorted((listed[0] & listed[1]) - SKIP)
        if args.only:
            methods = [m for m in methods if m in args.only.split(",")]
        times: dict[str, dict[str, list[float]]] = {m: {"before": [], "after": []} for m in methods}
        errors: dict[str, str] = {}
        for r in range(args.rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for which in order:
                got = child(trees[which], {**base, "list": False, "methods": methods})
                for m, v in got.items():
                    if "error" in v:
                        errors[f"{m} ({which})"] = v["error"]
                    else:
                        times[m][which].append(v["seconds"])
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(
        f"\n{args.arch} at {args.size} px, {args.images} images, {args.threads} thread(s); "
        f"before = {args.before}, after = {args.after}; median of {args.rounds} rounds, "
        f"each the best of {args.repeats} calls (ms per call)\n"
    )
    print("| method | before | after | after / before |")
    print("|---|---:|---:|---:|")
    for m in methods:
        b, a = times[m]["before"], times[m]["after"]
        if not b or not a:
            continue
        mb, ma = statistics.median(b), statistics.median(a)
        print(f"| {m} | {1e3 * mb:.1f} | {1e3 * ma:.1f} | {ma / mb:.3f} |")
    for k, v in errors.items():
        print(f"\n{k}: {v}")


if __name__ == "__main__":
    main()

"""Cost of DRIB's pruning baselines and of the information-plane callback, as multiples of
their model-pass floor.

    python benchmarks/drib_baselines.py [--arch resnet20] [--n-train 1024] [--n-plane 1000]

Measured in one run, on randomly initialised weights with BatchNorm scales drawn at random
(the architecture, not the accuracy, sets the cost), on ``shapes`` images:

- pruning to a 50 % MAC reduction (:func:`cnnlens.studies.drib.baselines.prune_to_macs`: the
  bisection's copies, traces and MAC counts), L1 and slimming; floor: one forward of a batch
  of 128 (a pruning step costs no data pass at all, so this is a scale, not a bound);
- one fine-tune epoch of the pruned model on ``--n-train`` images through ``cnnlens.train.fit``
  vs the same epoch of the unpruned model (the pruned one should be cheaper, by about the
  MAC ratio where the CPU kernels scale);
- the :class:`~cnnlens.studies.drib.information_plane.InformationPlane` callback per epoch
  (hooked forward of ``--n-plane`` images, three layers, both estimators) vs its floor, the
  plain forward of those images; the estimators' share is the remainder.

No peer implements the information plane as a training callback; Torch-Pruning's own
pruning is what the baselines call, so there is no side-by-side. The machine's load average
is printed with the numbers: on a shared machine the times are not reliable.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from cnnlens import nets
from cnnlens.data import load
from cnnlens.studies.drib.baselines import prune_to_macs
from cnnlens.studies.drib.information_plane import InformationPlane
from cnnlens.train import TrainConfig, fit


def timed(fn, repeats: int = 1) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def random_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.2, 1.5, generator=gen)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--n-train", type=int, default=1024)
    parser.add_argument("--n-plane", type=int, default=1000)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    train = load("shapes", split="train", n=max(args.n_train, args.n_plane))
    fine_tune = train.subset(range(args.n_train))
    torch.manual_seed(0)
    model = random_bn(nets.create(args.arch, num_classes=train.num_classes))
    x128, _ = train.tensors(range(128))

    def forward128():
        with torch.no_grad():
            model(x128)

    floor = timed(forward128, 3)
    print(f"{args.arch}: forward of 128 images {floor * 1e3:.0f} ms")
    config = TrainConfig(epochs=1, batch_size=128, augment=(), seed=0)

    def epoch(net):
        return lambda: fit(net, fine_tune, config=config)

    base = random_bn(nets.create(args.arch, num_classes=10))
    pruned = {}
    for method in ("l1", "slimming"):
        t0 = time.perf_counter()
        pruned[method] = prune_to_macs(model, (3, 32, 32), method=method, reduction=50)
        pruned[method].seconds = time.perf_counter() - t0
    # fine-tune epochs interleaved (unpruned, l1, slimming, twice), the faster of two kept
    nets_by_name = {"unpruned": base, **{m: r.model for m, r in pruned.items()}}
    for net in nets_by_name.values():
        epoch(net)()  # warm-up
    tune: dict[str, float] = {}
    for _ in range(2):
        for name, net in nets_by_name.items():
            t0 = time.perf_counter()
            epoch(net)()
            tune[name] = min(tune.get(name, float("inf")), time.perf_counter() - t0)
    for method, result in pruned.items():
        print(
            f"{method}: pruning to {result.macs / 1e6:.2f} M MACs ({result.reduction:.1f} % "
            f"fewer) {result.seconds:.2f} s = {result.seconds / floor:.1f} x forward(128); "
            f"fine-tune epoch ({args.n_train} images) {tune[method]:.2f} s vs unpruned "
            f"{tune['unpruned']:.2f} s = {tune[method] / tune['unpruned']:.2f} x"
        )

    layers = ["layer1", "layer2", "layer3"] if hasattr(model, "layer3") else None
    plane = InformationPlane(train, layers=layers, n=args.n_plane)
    xp = plane.x

    def plain():
        with torch.no_grad():
            for start in range(0, len(xp), 256):
                model(xp[start : start + 256])

    plane_floor = timed(plain, 2)
    record: dict = {}
    per_epoch = timed(lambda: plane(1, model, record), 2)
    features = timed(lambda: plane.features(model), 2)
    print(
        f"information plane ({len(xp)} images, {len(plane.layers)} layers, both estimators): "
        f"{per_epoch:.2f} s per epoch = {per_epoch / plane_floor:.2f} x its forward floor "
        f"({plane_floor:.2f} s); hooked features alone {features / plane_floor:.2f} x, "
        f"estimators {per_epoch - features:.2f} s"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

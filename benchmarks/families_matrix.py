"""The family x method matrix: ran (and how it is checked) or refused, and time.

    python benchmarks/families_matrix.py [--size 64] [--images 2] [--only resnet18,densenet121]

Every ImageNet family cnnlens builds (random weights, BatchNorm statistics set
from one batch), float32, ``--images`` images at ``--size`` px. Each registered
propagation, gradient and CAM method runs with cheap settings (Integrated
Gradients 4 steps); the row says ``ran`` with its check (DeepLIFT: the largest
summation-to-delta residual / |S(x) - S(x0)|; LRP: |sum R + the biases' share - S|
/ |S|; saliency, input x gradient, IG and Grad-CAM: the largest difference from
Captum's map / its largest value; all checks on a float64 copy: in float32 the
random-weight MobileNetV2 at 64 px differs from its own float64 gradient by ~4 % at one
thread count and not at another, so a float32 check measures the conditioning of the
model, not the method) or the refusal's
message, and the time as a multiple of one forward+backward of the same batch
(median of 3, after one warm-up). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from cnnlens import layers, nets
from cnnlens.attribution import explain
from cnnlens.errors import CnnlensError

FAMILIES = ["resnet18", "resnet50", "vgg16_bn", "mobilenet_v2", "efficientnet_b0",
            "densenet121", "convnext_tiny"]  # fmt: skip
METHODS = {
    "saliency": {}, "input-x-gradient": {}, "integrated-gradients": {"steps": 4},
    "guided-backprop": {}, "deconvnet": {}, "deeplift": {}, "lrp": {}, "cam": {},
    "grad-cam": {}, "grad-cam++": {}, "layer-cam": {}, "guided-grad-cam": {},
}  # fmt: skip


CAPTUM = {"saliency", "input-x-gradient", "integrated-gradients", "grad-cam"}


def captum_difference(model: nn.Module, x: torch.Tensor, method: str, e) -> float:
    """Largest difference from Captum's attribution / Captum's largest value."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from captum import attr

        t = torch.ones(len(x), dtype=torch.long)
        ours = e.raw
        if method == "saliency":
            ref, ours = attr.Saliency(model).attribute(x, target=t, abs=True), e.raw.abs()
        elif method == "input-x-gradient":
            ref = attr.InputXGradient(model).attribute(x, target=t)
        elif method == "integrated-gradients":
            ref = attr.IntegratedGradients(model).attribute(x, target=t, n_steps=4)
        else:
            layer = model.get_submodule(e.extras.get("layer") or layers.auto_layer(model, x))
            ref = attr.LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
            ours = e.extras["layer_map"]
    ref = ref.detach()
    return float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def calibrated(name: str, size: int) -> nn.Module:
    torch.manual_seed(0)
    model = nets.create(name, num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.randn(4, 3, size, size))
    return model.eval()


def timed(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    families = args.only.split(",") if args.only else FAMILIES
    print("| family | method | result | check | x fwd+bwd |\n|---|---|---|---|---|")
    for family in families:
        model = calibrated(family, args.size)
        x = torch.randn(args.images, 3, args.size, args.size)

        def pass_once(model=model, x=x):
            xg = x.clone().requires_grad_(True)
            model(xg)[:, 1].sum().backward()

        floor = timed(pass_once)
        for method, kw in METHODS.items():
            try:
                e = explain(model, x, method, target=1, **kw)
            except CnnlensError as exc:
                print(f"| {family} | {method} | refused | {str(exc)[:160]} | |", flush=True)
                continue
            check = "finite" if bool(torch.isfinite(e.maps).all()) else "NOT FINITE"
            with torch.no_grad():
                score = model(x)[:, 1]
                if method == "deeplift":
                    diff = score - model(torch.zeros_like(x))[:, 1]
                    check = f"delta {float((e.extras['delta'].abs() / diff.abs()).max()):.1e}"
                if method == "lrp":
                    kept = e.extras["relevance_sum"] + e.extras["bias_share"]
                    check = (
                        f"sum R + bias share vs S {float(((kept - score) / score).abs().max()):.1e}"
                    )
            if method in CAPTUM:
                double, xd = copy.deepcopy(model).double(), x.double()
                e64 = explain(double, xd, method, target=1, **kw)
                check = f"vs Captum {captum_difference(double, xd, method, e64):.1e}"
            cost = timed(lambda m=method, k=kw, net=model, v=x: explain(net, v, m, target=1, **k))
            print(f"| {family} | {method} | ran | {check} | {cost / floor:.2f} |", flush=True)


if __name__ == "__main__":
    main()

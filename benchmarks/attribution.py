"""Attribution speed: cnnlens vs Captum on the same model, images and settings.

    python benchmarks/attribution.py [--threads 1] [--repeats 3] [--rounds 2]
                                     [--only grad-cam,lrp] [--width 1]
                                     [--arch resnet20] [--size 32] [--images 16]

Model: ResNet-20 (10 classes, random weights with BN statistics set; ``--width``
multiplies its 16/32/64 channels), 32x32,
the first 16 ``shapes`` test images, targets = class 0..7 fixed per image.
``--arch resnet50 --size 224``: any :mod:`cnnlens.nets` architecture (1000 classes
from 128 px up) on the images resized to ``--size``; the CAM rows use the last
spatial stage (``cnnlens.layers.auto_layer``), Score-CAM one pass per channel of it,
occlusion windows of size/8 (64 windows at any size); Captum's batch settings are
the ones that fit the default memory budget (``cnnlens.chunking.chunk_size``:
``internal_batch_size``, ``nt_samples_batch_size``, ``perturbations_per_eval``),
with its default only where images x steps fit as well. The floor's batches are
the powers of two from min(images, 16) up to what fits that budget.
For every case: cnnlens s/image, Captum s/image (where Captum has the
method; several Captum settings may be listed, the best is reported), their
ratio, and cnnlens' multiple of its floor = time / (passes x per-image cost
of one pass at the best batch size the method can use, i.e. a batch of at
most images x passes inputs: 16 for a one-pass method on 16 images, and 16 for
an optimisation whose iterations run one after another). A pass
is forward+backward for gradient methods and a forward for forward-only
ones (``kind``).

The floor runs the model as given (default memory layout). On the CPU the
methods run a channels-last copy of it; the forward-only methods and the mask
optimisations a copy with BatchNorm folded into the convolutions and ReLUs in
place as well, LRP its own BN-folded copy (see ``cnnlens.accel.fast_copy``), so
their multiple may be below 1.
The last line gives LRP epsilon-plus as a multiple of one plain forward+backward
pass of the model as given, at the same batch (issue 3's target: at most 1.5x a
plain gradient pass).

Part 2 adds rows by appending :class:`Case` objects to ``CASES``. Inputs both
sides share are made once, untimed: LIME / Kernel SHAP get the same SLIC labels
as Captum's ``feature_mask``, IBA its layer statistics (as a user stores them).
Numbers taken on a shared CPU are noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Case:
    """One benchmark row: a cnnlens call and the equivalent Captum calls."""

    method: str
    settings: str
    passes: float  # model passes per image the method needs at least
    kind: str = "fb"  # "fb" = forward+backward pass, "f" = forward only
    forwards: float = 0.0  # extra forward-only passes per image (DeepLIFT's reference)
    # passes per image that can run side by side (default: all); an optimisation's
    # iterations run one after another, so its batch holds at most images x this
    side_by_side: float | None = None
    ours: dict = field(default_factory=dict)  # hyperparameters for cnnlens.explain
    prepared: Callable | None = None  # fn(model, x) -> more hyperparameters, made untimed
    captum: dict[str, Callable] = field(default_factory=dict)  # label -> fn(model, x, t)


def _captum():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import captum.attr as ca
    return ca


def _ig(**kw):
    return lambda m, x, t: _captum().IntegratedGradients(m).attribute(x, target=t, **kw)


def _nt(**kw):
    ca = _captum()
    return lambda m, x, t: ca.NoiseTunnel(ca.Saliency(m)).attribute(
        x, target=t, nt_type="smoothgrad", nt_samples=50, stdevs=0.15, **kw
    )


# the CAM rows' layer: layer3 of ResNet-20; the last spatial stage of another arch
_CAM = {"layer": "layer3"}


def _cam_layer(m: nn.Module) -> nn.Module:
    from cnnlens.layers import get_layer

    return get_layer(m, _CAM["layer"])


def _gradcam(m, x, t):
    ca = _captum()
    low = ca.LayerGradCam(m, _cam_layer(m)).attribute(x, target=t, relu_attributions=True)
    return ca.LayerAttribution.interpolate(low, x.shape[-2:], "bilinear")


CASES: list[Case] = [
    Case("saliency", "abs grad", 1, captum={"default": lambda m, x, t: _captum().Saliency(m)
         .attribute(x, target=t)}),
    Case("input-x-gradient", "", 1, captum={"default": lambda m, x, t: _captum()
         .InputXGradient(m).attribute(x, target=t)}),
    Case("integrated-gradients", "steps=50 gausslegendre zeros", 50, ours={"steps": 50},
         captum={"default": _ig(n_steps=50), "internal_batch_size=50": _ig(
             n_steps=50, internal_batch_size=50)}),
    Case("smoothgrad", "saliency, samples=50", 50, ours={"samples": 50},
         captum={"default": _nt(), "nt_samples_batch_size=50": _nt(nt_samples_batch_size=50)}),
    Case("guided-backprop", "", 1, captum={"default": lambda m, x, t: _captum()
         .GuidedBackprop(m).attribute(x, target=t)}),
    Case("deconvnet", "", 1, captum={"default": lambda m, x, t: _captum()
         .Deconvolution(m).attribute(x, target=t)}),
    Case("deeplift", "rescale, zeros", 1, forwards=1, captum={"default": lambda m, x, t: _captum()
         .DeepLift(m).attribute(x, target=t)}),
    Case("lrp", "epsilon (all layers)", 1, ours={"rule": "epsilon"}),
    # z+ needs each layer's convolution with W+ on top of the gradient pass: one more
    # forward's worth of convolutions, counted in its floor (as DeepLIFT's reference)
    Case("lrp", "epsilon-plus", 1, forwards=1, ours={"composite": "epsilon-plus"}),
    Case("grad-cam", "layer3, bilinear", 1, ours={"layer": "layer3"},
         captum={"default": _gradcam}),
    Case("grad-cam++", "layer3", 1, ours={"layer": "layer3"}),
    Case("layer-cam", "layer3", 1, ours={"layer": "layer3"}),
    Case("cam", "layer3", 1, kind="f", ours={"layer": "layer3"}),
    Case("score-cam", "layer3 (64 channels)", 64, kind="f", ours={"layer": "layer3"}),
    Case("guided-grad-cam", "layer3, nearest", 2, ours={"layer": "layer3"},
         captum={"default": lambda m, x, t: _captum().GuidedGradCam(m, _cam_layer(m))
                 .attribute(x, target=t)}),
]  # fmt: skip


# --- part 2: perturbation and optimisation methods -------------------------------------
_SEGMENTS: dict[str, torch.Tensor] = {}


def _slic_mask(x: torch.Tensor) -> torch.Tensor:
    """The SLIC segments cnnlens uses, computed once, as Captum's feature_mask [N,1,H,W]."""
    if "slic" not in _SEGMENTS:
        from cnnlens.attribution.segments import segment

        _SEGMENTS["slic"] = segment(x, "slic")[0][:, None]
    return _SEGMENTS["slic"]


def _occlusion(window: int = 4, **kw):
    return lambda m, x, t: (
        _captum()
        .Occlusion(m)
        .attribute(
            x,
            target=t,
            sliding_window_shapes=(3, window, window),
            strides=(3, window, window),
            baselines=0.0,
            **kw,
        )
    )


def _surrogate(cls: str, **kw):
    def run(m, x, t):
        method = getattr(_captum(), cls)(m)
        mask = _slic_mask(x)
        return torch.cat([
            method.attribute(x[i : i + 1], target=int(t[i]), feature_mask=mask[i : i + 1],
                             n_samples=200, **kw)
            for i in range(len(x))
        ])  # fmt: skip

    return run


class _IbaStatistics:
    """Layer statistics estimated once (as a user stores them), outside the timing."""

    def __init__(self) -> None:
        self.value = None

    def get(self, model, x):
        if self.value is None:
            from cnnlens.attribution.bottleneck import estimate_statistics

            self.value = estimate_statistics(model, "layer2", x)
        return self.value


CASES += [
    Case("occlusion", "window 4, stride 4 (64 windows)", 64, kind="f",
         ours={"window": 4, "stride": 4},
         captum={"default": _occlusion(), "perturbations_per_eval=64": _occlusion(
             perturbations_per_eval=64)}),
    Case("rise", "n_masks=1000, s=8, p1=0.5", 1000, kind="f",
         ours={"n_masks": 1000, "s": 8, "p1": 0.5}),
    Case("lime", "n_samples=200, SLIC (~30 segs)", 200, kind="f", ours={"n_samples": 200},
         prepared=lambda m, x: {"segments": _slic_mask(x)[:, 0]},
         captum={"default": _surrogate("Lime"), "perturbations_per_eval=200": _surrogate(
             "Lime", perturbations_per_eval=200)}),
    Case("kernel-shap", "n_samples=200, SLIC (~30 segs)", 200, kind="f",
         ours={"n_samples": 200}, prepared=lambda m, x: {"segments": _slic_mask(x)[:, 0]},
         captum={"default": _surrogate("KernelShap"), "perturbations_per_eval=200": _surrogate(
             "KernelShap", perturbations_per_eval=200)}),
    Case("extremal-perturbation", "area 0.1, iterations=100", 100, side_by_side=1,
         ours={"area": 0.1, "iterations": 100}),
    Case("meaningful-perturbation", "iterations=100", 100, side_by_side=1,
         ours={"iterations": 100}),
    Case("iba", "layer2, beta 10, 10 steps x 10", 100, side_by_side=10, ours={"layer": "layer2"},
         prepared=lambda m, x: {"statistics": _IBA.get(m, x)}),
]  # fmt: skip
_IBA = _IbaStatistics()


def benchmark_model(name: str = "resnet20", width: int = 1, classes: int = 10) -> nn.Module:
    """``name`` (a :mod:`cnnlens.nets` model, ``classes`` classes) in eval mode with frozen
    parameters and BatchNorm statistics as after training, not 0 / 1."""
    from cnnlens import nets

    torch.manual_seed(0)
    extra = {"width": width} if width != 1 else {}  # only the ResNets take a width
    model = nets.create(name, num_classes=classes, **extra)
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.running_mean.uniform_(-0.2, 0.2, generator=gen)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def setup(n: int = 16, width: int = 1, arch: str = "resnet20", size: int = 32):
    from cnnlens.data import load

    model = benchmark_model(arch, width=width, classes=1000 if size >= 128 else 10)
    x, _ = load("shapes", split="test").tensors(range(n))
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
    target = torch.arange(n) % 8
    return model, x.contiguous(), target


def sized_cases(cases: list[Case], model: nn.Module, x: torch.Tensor) -> list[Case]:
    """The rows for another architecture or size: the CAM layer (last spatial stage),
    Score-CAM's passes (its channels), occlusion's window (size / 8) and Captum's batch
    settings at what fits the default memory budget (its defaults only where they fit)."""
    from dataclasses import replace

    from cnnlens.chunking import chunk_size
    from cnnlens.layers import auto_layer, get_layer

    n, size = len(x), x.shape[-1]
    _CAM["layer"] = layer = auto_layer(model, x[:1])
    store = {}
    handle = get_layer(model, layer).register_forward_hook(lambda _m, _i, o: store.update(o=o))
    with torch.no_grad():
        model(x[:1])
    handle.remove()
    channels = store["o"].shape[1]
    fb = chunk_size(model, x[:1], backward=True)
    f = chunk_size(model, x[:1], backward=False)
    w = max(1, size // 8)
    captum = {
        "integrated-gradients": {f"internal_batch_size={fb}": _ig(
            n_steps=50, internal_batch_size=fb)} | ({"default": _ig(n_steps=50)}
                                                    if n * 50 <= fb else {}),
        "smoothgrad": {f"nt_samples_batch_size={max(1, fb // n)}": _nt(
            nt_samples_batch_size=max(1, fb // n))} | ({"default": _nt()} if n * 50 <= fb else {}),
        "occlusion": {f"perturbations_per_eval={max(1, f // n)}": _occlusion(
            w, perturbations_per_eval=max(1, f // n))} | ({"default": _occlusion(w)}),
        "lime": {f"perturbations_per_eval={f}": _surrogate("Lime", perturbations_per_eval=f)},
        "kernel-shap": {f"perturbations_per_eval={f}": _surrogate(
            "KernelShap", perturbations_per_eval=f)},
    }  # fmt: skip
    out = []
    for case in cases:
        ours = {k: layer if v == "layer3" else v for k, v in case.ours.items()}
        settings = case.settings.replace("layer3", layer)
        passes = case.passes
        if case.method == "score-cam":
            passes, settings = channels, f"{layer} ({channels} channels)"
        if case.method == "occlusion":
            ours = {"window": w, "stride": w}
            settings = f"window {w}, stride {w} (64 windows)"
        theirs = captum.get(case.method, case.captum)
        out.append(replace(case, ours=ours, settings=settings, passes=passes, captum=theirs))
    return out


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _pass_fns(model: nn.Module, x: torch.Tensor, batch: int) -> dict[str, Callable[[], None]]:
    xb = x.repeat((batch + len(x) - 1) // len(x), 1, 1, 1)[:batch].contiguous()

    def fb() -> None:
        v = xb.clone().requires_grad_(True)
        torch.autograd.grad(model(v)[:, 0].sum(), v)

    def f() -> None:
        with torch.no_grad():
            model(xb)

    return {"fb": fb, "f": f}


BATCHES = (16, 32, 64, 128, 256)  # set by main: what --images and the memory budget allow


def batch_sizes(model: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """Powers of two from min(images, 16) up to 256 and to what fits the default memory
    budget for a forward+backward pass (cnnlens.chunking.chunk_size)."""
    from cnnlens.chunking import chunk_size

    cap = min(256, max(chunk_size(model, x[:1], backward=True), min(len(x), 16)))
    return tuple(b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) if min(len(x), 16) <= b <= cap)


def best_batches(model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, int]:
    """The batch size with the lowest per-image cost, for each kind of pass."""
    best: dict[str, tuple[float, int]] = {}
    for batch in BATCHES:
        for kind, fn in _pass_fns(model, x, batch).items():
            cost = best_time(fn, repeats) / batch
            if kind not in best or cost < best[kind][0]:
                best[kind] = (cost, batch)
    return {kind: b for kind, (_c, b) in best.items()}


def floor_cost(model: nn.Module, x: torch.Tensor, kind: str, items: float, repeats: int):
    """Per-image seconds of one pass of ``kind``, measured now, at the best batch size
    the method could use: batches up to its ``items`` model inputs (images x passes).

    A one-pass method on 16 images cannot batch more than 16, so its floor is
    the 16-image pass; a 50-step method may use any batch size.
    """
    usable = [b for b in BATCHES if b <= max(items, BATCHES[0])]
    return min(best_time(_pass_fns(model, x, b)[kind], repeats) / b for b in usable)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per row")
    parser.add_argument("--only", default="", help="comma list of method names")
    parser.add_argument(
        "--width", type=int, default=1, help="ResNet-20 channel multiplier (1: 16/32/64)"
    )
    parser.add_argument("--arch", default="resnet20", help="a cnnlens.nets architecture")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from cnnlens.attribution import explain

    global BATCHES
    model, x, target = setup(args.images, args.width, args.arch, args.size)
    n = len(x)
    BATCHES = batch_sizes(model, x)
    default = args.arch == "resnet20" and args.size == 32
    cases = CASES if default else sized_cases(CASES, model, x)
    batches = best_batches(model, x, args.repeats)
    cost = {k: floor_cost(model, x, k, 1e9, args.repeats) for k in batches}
    print(
        f"{args.arch} (width {args.width}) {args.size}x{args.size}, {n} images, "
        f"{args.threads} thread(s); "
        f"best batch fwd+bwd "
        f"{batches['fb']}, fwd {batches['f']}; per-image pass cost: fwd+bwd "
        f"{cost['fb'] * 1e3:.3f} ms, fwd {cost['f'] * 1e3:.3f} ms. Each row's floor is "
        "re-measured just before it, at the best batch up to images x passes"
    )
    only = {s for s in args.only.split(",") if s}
    header = (
        f"| {'method':20s} | {'settings':30s} | cnnlens s/img | Captum s/img (best setting) "
        "| ratio | x floor |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    seconds: dict[tuple[str, str], tuple[float, float]] = {}
    for case in cases:
        if only and case.method not in only:
            continue
        # rounds interleave ours, Captum's settings and the floor, so a slow spell of
        # a shared machine hits all of them; each keeps its best round
        timed = [measure(case, model, x, target, explain, args.repeats) for _ in range(args.rounds)]
        ours = min(t["ours"] for t in timed)
        floor = min(t["floor"] for t in timed)
        captum = {label: min(t[label] for t in timed) for label in case.captum if label in timed[0]}
        best_label = min(captum, key=captum.get) if captum else "-"
        theirs = captum.get(best_label)
        theirs_s = f"{theirs:.5f} ({best_label})" if theirs is not None else "-"
        if "default" in captum and best_label != "default":  # part 2: defaults too
            theirs_s += f"; default {captum['default']:.5f} = {captum['default'] / ours:.1f}x ours"
        seconds[(case.method, case.settings)] = (ours, min(t["pass"] for t in timed))
        ratio = f"{ours / theirs:.2f}" if theirs is not None else "-"
        print(
            f"| {case.method:20s} | {case.settings:30s} | {ours:13.5f} | {theirs_s:27s} "
            f"| {ratio:5s} | {ours / floor:7.2f} |",
            flush=True,
        )
    if ("lrp", "epsilon-plus") in seconds:
        lrp, gradient_pass = seconds[("lrp", "epsilon-plus")]
        print(
            f"LRP epsilon-plus = {lrp / gradient_pass:.2f}x one plain forward+backward pass "
            f"of the model ({gradient_pass * 1e3:.3f} ms/img at batch {len(x)})"
        )


def measure(case: Case, model, x, target, explain, repeats: int) -> dict[str, float]:
    """One round: seconds per image of ours, of each Captum setting, and of the floor."""
    n = len(x)
    extra = case.prepared(model, x) if case.prepared else {}
    times = {
        "ours": best_time(
            lambda: explain(model, x, case.method, target=target, **case.ours, **extra), repeats
        )
        / n
    }
    for label, fn in case.captum.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                times[label] = best_time(lambda fn=fn: fn(model, x, target), repeats) / n
            except RuntimeError as exc:  # e.g. Captum's DeepLift on a reused ReLU module
                print(f"  Captum {case.method} ({label}) refused: {str(exc)[:120]}", flush=True)
    together = case.passes if case.side_by_side is None else case.side_by_side
    times["pass"] = floor_cost(model, x, case.kind, n * together, repeats)
    floor = case.passes * times["pass"]
    if case.forwards:
        floor += case.forwards * floor_cost(model, x, "f", n * case.forwards, repeats)
    times["floor"] = floor
    return times


if __name__ == "__main__":
    main()

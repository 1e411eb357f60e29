"""Concept-conditional heatmaps (CRP) as a multiple of one LRP backward at batch size.

    python benchmarks/crp.py [--arch resnet20] [--layer layer1] [--channels 16]
                             [--n 8] [--threads 2] [--rounds 3]
                             [--zennit-path DIR] [--composites epsilon,epsilon-plus]

The work: ``--n`` test images of ``shapes`` (32 px), a ``benchmark_model``,
``conditional_relevance`` for the first ``--channels`` channels of ``--layer``
(k conditions, one batched backward over ``n * k`` rows, chunked). The floor is
``k`` times one LRP (``cnnlens.explain(..., "lrp")``) of the ``n`` images, so the
issue's goal "k heatmaps cost about k backward passes at batch size" reads as a ratio
near 1; "LRP of the kx batch" is plain LRP of the ``n * k`` rows CRP runs (its own
floor: what the expanded batch costs without the conditions); "separate calls" is the
naive alternative, k conditional calls of one channel each. Rounds are interleaved.
Not a test: it prints seconds and ratios; best of ``--rounds``.

``--zennit-path DIR`` adds a side-by-side with zennit-crp (Achtibat et al.'s own code;
``pip install --no-deps --target DIR zennit zennit-crp``): the same model, images, layer,
channels and target, conditional heatmaps of every condition by
``crp.attribution.CondAttribution`` against ``conditional_relevance``, per composite of
``--composites``, with zennit's rules matched per layer type (:func:`zennit_composite`):
time per image and agreement (max abs difference over max abs, Pearson). zennit-crp
imports ``torchvision`` (absent here) for two names; a stand-in package of those two,
written to a temporary folder at run time, lets it import (never in the package).
``--bn fold`` (default) gives both the BatchNorm-folded copy cnnlens's LRP runs on
(``cnnlens.accel.fold_batchnorm``); ``--bn merge`` gives both the unfolded model, cnnlens
folding it itself and zennit merging it with its ``SequentialMergeBatchNorm`` canonizer.
Without ``--zennit-path``, or when zennit-crp does not import from it, the comparison
is skipped with one line. ``--dtype float64`` runs the comparison in double precision
(``conditional_relevance`` returns float32 maps, so ~6e-8 is then its floor).

Measured (resnet20, layer1, channels 0..7 or 0..15, shapes images): ``--bn fold``
agrees to float precision with both composites (max |d| / max 3.9e-8 in float64, i.e.
the float32 rounding of cnnlens's output; in float32 7e-5 with epsilon, 7e-7 with
epsilon-plus, the near-zero denominators amplifying rounding). ``--bn merge`` does not
with ``epsilon`` (~9e-3, Pearson 0.999998, in float64 too): zennit's
``MergeBatchNorm`` leaves each BatchNorm computing ``x / sqrt(1 + eps)`` (running_var
set to 1, its ``eps`` of 1e-5 kept), not the identity, so its activations and relevance
differ slightly from the exactly folded model, and the epsilon rule's small
denominators magnify that; with every BatchNorm's ``eps`` set to 0 the merge agrees to
3.8e-8 too.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

from attribution import benchmark_model
from cnnlens import explain
from cnnlens.accel import fold_batchnorm
from cnnlens.analysis import conditional_relevance
from cnnlens.data import load
from cnnlens.nets.resnet import BasicBlock

# zennit-crp's two torchvision imports, as a stand-in package written at run time
STANDIN = {
    "torchvision/__init__.py": "",
    "torchvision/models/__init__.py": "",
    "torchvision/models/resnet.py": (
        "import torch\n\n\nclass BasicBlock(torch.nn.Module):\n    pass\n\n\n"
        "class Bottleneck(torch.nn.Module):\n    pass\n"
    ),
    "torchvision/transforms/__init__.py": "",
    "torchvision/transforms/functional.py": (
        "def gaussian_blur(*args, **kwargs):\n"
        "    raise NotImplementedError('torchvision stand-in of benchmarks/crp.py')\n"
    ),
}


def import_zennit_crp(path: str | None, folder: Path) -> str | None:
    """Make zennit-crp importable from ``path`` (a torchvision stand-in written under
    ``folder`` if torchvision itself is absent); None, or why it cannot be."""
    if path is None:
        return "no --zennit-path given"
    if not Path(path).is_dir():
        return f"--zennit-path {path} is not a folder"
    sys.path.insert(0, str(path))
    if importlib.util.find_spec("torchvision") is None:
        for name, text in STANDIN.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
        sys.path.insert(0, str(folder))
    try:
        importlib.import_module("zennit.composites")
        importlib.import_module("crp.attribution")
    except Exception as error:  # any import failure means: no comparison
        return f"zennit-crp does not import from {path}: {type(error).__name__}: {error}"
    return None


def _block_with_sum(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    """cnnlens's ``BasicBlock.forward`` with the residual add as zennit's ``Sum`` module
    (so zennit's ``Norm`` rule, the proportional split, applies to it; a functional add
    would pass the gradient, copying relevance to both summands)."""
    out = block.relu1(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    return block.relu2(block.zennit_sum(torch.stack([out, block.shortcut(x)], dim=-1)))


def zennit_composite(name: str, eps: float, merge_bn: bool):
    """The zennit composite whose rules match cnnlens's composite ``name`` per layer type
    (:mod:`cnnlens.attribution.lrp` and ``lrp_rules``): ReLU passes relevance (cnnlens's
    gradient routing gives the same, as a zero activation gets zero relevance below);
    the residual sum and average pooling get ``Norm`` (epsilon without parameters);
    linear layers ``Epsilon``; convolutions ``Epsilon`` (``epsilon``) or ``ZPlus`` with
    the bias zeroed (``epsilon-plus``: cnnlens's z+ ignores biases, zennit's ZPlus adds
    the positive part of the bias to the denominator unless told to zero it)."""
    from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
    from zennit.composites import LayerMapComposite
    from zennit.layer import Sum
    from zennit.rules import Epsilon, Norm, Pass, ZPlus
    from zennit.types import Activation, AvgPool, BatchNorm, Convolution

    if name == "epsilon":
        conv = Epsilon(epsilon=eps)
    elif name == "epsilon-plus":
        conv = ZPlus(stabilizer=eps, zero_params=["bias"])
    else:
        raise SystemExit(f"no zennit match written for composite {name!r}")

    def residual(_name, module):
        if isinstance(module, BasicBlock):
            return {"forward": types.MethodType(_block_with_sum, module), "zennit_sum": Sum()}
        return None

    canonizers = [SequentialMergeBatchNorm()] if merge_bn else []
    canonizers.append(AttributeCanonizer(residual))
    layer_map = [
        (Activation, Pass()),
        (Sum, Norm(stabilizer=eps)),
        (AvgPool, Norm(stabilizer=eps)),
        (BatchNorm, Pass()),  # only in --bn merge: the merged BatchNorm, near the identity
        (Convolution, conv),
        (torch.nn.Linear, Epsilon(epsilon=eps)),
    ]
    return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)


def compare_with_zennit(args, model: torch.nn.Module, x: torch.Tensor, target: int) -> None:
    """The side-by-side: per composite, seconds per image of both and their agreement."""
    with tempfile.TemporaryDirectory() as folder:
        why = import_zennit_crp(args.zennit_path, Path(folder))
        if why is not None:
            print(f"zennit-crp comparison skipped: {why}")
            return
        from crp.attribution import CondAttribution

        eps = 1e-6
        if args.dtype == "float64":
            model, x = copy.deepcopy(model).double(), x.double()
        if args.bn == "fold":
            model, _ = fold_batchnorm(model, x[:1])
        theirs_model = copy.deepcopy(model)  # zennit's hooks and canonizers touch it
        attribution = CondAttribution(theirs_model)
        k = args.channels
        bn = {"fold": "folded (both get the folded copy)",
              "merge": "unfolded (cnnlens folds it, zennit merges it)"}[args.bn]  # fmt: skip
        print(
            f"\nzennit-crp side-by-side: {args.arch}, BatchNorm {bn}, {args.layer} channels "
            f"0..{k - 1}, target {target}, {len(x)} images, {x.dtype}, {args.threads} threads"
        )
        print(f"{'composite':14s} {'cnnlens s/img':>13s} {'zennit s/img':>12s} "
              f"{'max|d|/max':>10s} {'pearson':>9s}")  # fmt: skip
        for name in args.composites.split(","):
            composite = zennit_composite(name, eps, args.bn == "merge")
            conditions = [{"y": [target], args.layer: [c]} for c in range(k)]

            def ours(name=name):
                return conditional_relevance(
                    model, x, layer=args.layer, channels=list(range(k)), target=target,
                    composite=name, epsilon=eps,
                )  # fmt: skip

            def theirs(composite=composite, conditions=conditions):
                if len(x) == k:  # CondAttribution pairs rows with conditions then
                    maps = [attribution(x[i : i + 1].clone().requires_grad_(True), conditions,
                                        composite).heatmap for i in range(len(x))]  # fmt: skip
                    return torch.cat(maps).view(len(x), k, *x.shape[-2:])
                data = x.clone().requires_grad_(True)  # rows i * k + j: image i, channel j
                return attribution(data, conditions, composite).heatmap.view(
                    len(x), k, *x.shape[-2:]
                )

            seconds = {"ours": [], "theirs": []}
            a, b = ours(), theirs()  # warm
            for _ in range(args.rounds):
                for key, fn in (("ours", ours), ("theirs", theirs)):
                    start = time.perf_counter()
                    fn()
                    seconds[key].append(time.perf_counter() - start)
            a, b = a.double().flatten(), b.detach().double().flatten()
            rel = float((a - b).abs().max() / a.abs().max())
            pearson = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
            ours_s, theirs_s = (min(seconds[key]) / len(x) for key in ("ours", "theirs"))
            print(f"{name:14s} {ours_s:13.4f} {theirs_s:12.4f} {rel:10.2e} {pearson:9.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--layer", default="layer1")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--zennit-path", default=None, help="where zennit-crp is installed")
    parser.add_argument("--composites", default="epsilon,epsilon-plus")
    parser.add_argument("--bn", choices=("fold", "merge"), default="fold")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="the comparison's model and images")  # fmt: skip
    parser.add_argument("--only-zennit", action="store_true", help="skip the floors table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = benchmark_model(args.arch)
    x, _ = load("shapes", split="test").tensors(range(args.n))
    if not args.only_zennit:
        floors(args, model, x)
    compare_with_zennit(args, model, x, target=0)


def floors(args, model: torch.nn.Module, x: torch.Tensor) -> None:
    """CRP against its floors (the table described at the top)."""
    k = args.channels
    channels = list(range(k))

    def lrp():
        return explain(model, x, "lrp", target=0)

    def batched():
        return conditional_relevance(model, x, layer=args.layer, channels=channels, target=0)

    xk = x.repeat_interleave(k, 0)

    def lrp_expanded():
        return explain(model, xk, "lrp", target=0)

    def per_call():
        for c in channels:
            conditional_relevance(model, x, layer=args.layer, channels=[c], target=0)

    works = {
        "LRP, 1 backward": lrp,
        f"LRP of the {k}x batch": lrp_expanded,
        f"CRP, {k} channels batched": batched,
        f"CRP, {k} separate calls": per_call,
    }
    for fn in works.values():  # warm: the folded copy and the chunk size are cached per model
        fn()
    seconds = {name: [] for name in works}
    for _ in range(args.rounds):  # interleaved rounds: a busy machine slows all alike
        for name, fn in works.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    rows = [(name, min(times)) for name, times in seconds.items()]
    one = rows[0][1]
    print(f"{args.arch} {args.layer}, {args.n} images of 32 px, {args.threads} threads")
    print(f"{'work':28s} {'seconds':>8s} {'x LRP':>7s} {'x k LRP':>8s}")
    for name, sec in rows:
        print(f"{name:28s} {sec:8.3f} {sec / one:7.2f} {sec / (k * one):8.2f}")


if __name__ == "__main__":
    main()

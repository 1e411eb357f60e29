"""Report section "Pruning baselines and the information plane" (paper 000, Tables 1-4).

Shown when the run asks for it (``ReportContext.options["drib_baselines"]``; the demo
does). Two measurements, cached in ``<out>/drib-baselines/report-cache.json`` (keyed by
the model's weights and the settings), so a second report only draws:

- the report's model pruned to half its MACs by L1-norm filter pruning, network slimming,
  FPGM, Taylor importance and soft filter pruning (:mod:`cnnlens.studies.drib.baselines`),
  and the dynamic baseline FBS (:mod:`cnnlens.studies.drib.fbs`) at the same MACs per
  input, each trained one short epoch on a subset of the training images (slimming after
  one sparsity epoch), beside the unpruned model, with each model's CPU latency;
- the information plane (:class:`cnnlens.studies.drib.information_plane.InformationPlane`)
  of a short ResNet-8 training from scratch on the same data, with the transition and
  convergence points. It is a training of its own, not the report model's: the demo's
  model is trained (and cached) before the report, without the callback.
"""

from __future__ import annotations

import hashlib
import html
from pathlib import Path

import torch

from .. import ReportContext, section, table_html
from ..figures import figure_html

FULL = {
    "reduction": 50.0,
    "search_steps": 14,
    "n_fine_tune": 2000,
    "epochs": 1,
    "sparsity_epochs": 1,
    "lambda": 1e-4,
    "latency_batch": 64,
    "latency_repeats": 10,
    "plane_arch": "resnet8",
    "plane_train": 4000,
    "plane_epochs": 5,
    "plane_lr": 0.1,
    "plane_images": 500,
    "plane_layers": ["layer1", "layer2", "layer3"],
    "noise_variance": 0.1,
    "bins": 30,
}
QUICK = {
    **FULL,
    "n_fine_tune": 256,
    "search_steps": 8,
    "latency_batch": 32,
    "latency_repeats": 5,
    "plane_train": 256,
    "plane_epochs": 3,
    "plane_images": 200,
}
FOLDER = "drib-baselines"
# The gated model's MAC count sets the baselines' budget only where it saves at least this
# share (%); below it (e.g. the quick demo's barely trained gate) the fixed reduction is used.
MIN_GATED_REDUCTION = 5.0
CACHE = "report-cache.json"

# Published points to set ours beside (CIFAR-10; issue 19).
REFERENCES = [
    {
        "source": "Torch-Pruning, ResNet-56 (base 93.53 %)",
        "method": "group L1",
        "MACs": "2.12x fewer",
        "accuracy (%)": "92.93",
    },
    {
        "source": "Torch-Pruning, ResNet-56 (base 93.53 %)",
        "method": "group BN scale",
        "MACs": "2.12x fewer",
        "accuracy (%)": "93.29",
    },
    {
        "source": "Li et al. 2017, VGG-16 (base error 6.75 %)",
        "method": "L1 filters",
        "MACs": "-34.2 %",
        "accuracy (%)": "93.40",
    },
    {
        "source": "Li et al. 2017, ResNet-56-B",
        "method": "L1 filters",
        "MACs": "-27.6 %",
        "accuracy (%)": "93.06",
    },
]


def _weights_key(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def baseline_settings(ctx: ReportContext) -> dict:
    """QUICK or FULL; with a gated model in the report (``options["drib_run"]``), the MAC
    budget is its mean dynamic MAC count (paper 000 compares at the same budget)."""
    settings = dict(QUICK if ctx.options.get("quick") else FULL)
    settings["budget_from"] = "a fixed reduction"
    gated = ctx.options.get("drib_run")
    if gated is not None:
        reduction = round(float(gated.evaluation["reduction_ratio"]), 1)
        if MIN_GATED_REDUCTION <= reduction < 100:  # a gate that saves ~nothing sets no budget
            settings["reduction"] = reduction
            settings["budget_from"] = "the gated model's mean MACs"
    return settings


def cached_measure(ctx: ReportContext, settings: dict) -> dict:
    from ...runs import measured
    from ...studies.drib.baseline_study import baselines_and_plane

    key = {"weights": _weights_key(ctx.model), "settings": settings}
    return measured(
        Path(ctx.out) / FOLDER / CACHE,
        key,
        lambda: baselines_and_plane(ctx.model, ctx.train, ctx.test, settings),
    )


@section("drib-baselines", "Pruning baselines and the information plane", order=86)
def drib_baselines_section(ctx: ReportContext) -> str | None:
    if not ctx.options.get("drib_baselines") or ctx.train is None:
        return None
    from ...studies.drib.information_plane import estimator_text
    from ..information_plane_plot import information_plane_plot

    settings = baseline_settings(ctx)
    result = cached_measure(ctx, settings)
    rows = result["rows"]
    latency_batch = result.get("latency_batch")
    table = [
        {
            "method": r["method"],
            "kind": r.get("kind", "static") if r["method"] != "unpruned" else "-",
            "MACs (M)": f"{r['macs'] / 1e6:.2f}",
            "reduction (%)": f"{r['reduction']:.1f}",
            "accuracy (%)": f"{100 * r['accuracy']:.2f}",
            "training": "-"
            if r["method"] == "unpruned"
            else (f"{r['sparsity_epochs']} sparsity + " if r["sparsity_epochs"] else "")
            + f"{r['epochs']} fine-tune",
            f"latency (ms, batch {latency_batch})": "-"
            if r.get("latency_ms") is None
            else f"{r['latency_ms']:.2f}",
        }
        for r in rows
    ]
    plane = result["plane"]
    key_rows = [
        {
            "layer": p["layer"],
            "estimator": p["estimator"],
            "point": p["point"],
            "I(X;Z) (bits)": f"{p['ixz']:.3f}",
            "I(Z;Y) (bits)": f"{p['izy']:.3f}",
            "epoch": p["epoch"],
            "accuracy (%)": f"{100 * p['accuracy']:.1f}",
        }
        for p in result["key_points"]
    ]
    texts = [
        estimator_text(e, bins=plane["bins"], noise_variance=plane["noise_variance"])
        for e in ("binning", "kde")
    ]
    parts = [
        "<p>The baselines of paper 000's Tables 1-2, at one MAC budget "
        f"({result['budget'] / 1e6:.2f} M, a {settings['reduction']:.1f} % reduction of the "
        f"report's model, from {settings['budget_from']}). Static: <b>l1</b> "
        "removes, the same share in every prunable layer, the "
        "filters of smallest L1 norm (Li et al. 2017); <b>slimming</b> trains with an L1 "
        "penalty on the BatchNorm scales (Liu et al. 2017; "
        f"&lambda; = {settings['lambda']:g}), then removes the channels of smallest scale "
        "under one global threshold; <b>fpgm</b> removes, the same share in every layer, the "
        "filters nearest the layer's geometric median (He et al. 2019); <b>taylor</b> removes "
        "the filters of smallest first-order Taylor importance, the squared sum of weight "
        "times gradient over a few training batches, under one global threshold (Molchanov "
        "et al. 2019). Dynamic: <b>fbs</b>, Feature Boosting and Suppression (Gao et al. 2019), "
        "a saliency predictor per gated layer (mean |input| per channel, a linear layer, ReLU) "
        "keeps the largest share d of each input's channels and scales them; d is the largest "
        "whose MACs per input stay within the budget, counted as DRIB's dynamic MACs are, and "
        "its MACs are the mean over the test images. <b>sfp</b>, soft filter pruning (He et "
        "al. 2018), zeroes the same share of filters of smallest L2 norm in every layer "
        "after each fine-tune epoch, letting them grow back, then cuts them. Latency: median "
        "wall-clock ms of interleaved calls on one batch of test "
        "images on this machine's CPU, which may be shared (its load moves the numbers); FBS "
        "runs dense, its suppressed channels multiplied by zero, so it saves MACs but not "
        "time. Torch-Pruning removes the static baselines' channels (those networks "
        "are really smaller); the pruning ratio is bisected until the MACs are at or just "
        "under the budget. In a ResNet with zero-padding shortcuts only the first conv of "
        "each block is pruned (Li et al.'s scheme for ResNet-56). Each pruned model is "
        f"fine-tuned on {result['train_images']} training images, its BatchNorm statistics "
        "re-estimated on them afterwards; accuracy on "
        f"{result['test_images']} test images. A demo-sized budget: the published runs "
        "fine-tune for 40-160 epochs.</p>",
        table_html(table),
        "<p>Published points on CIFAR-10, for scale (not the same data):</p>",
        table_html(REFERENCES),
        "<h3>Information plane</h3>",
        f"<p>A {settings['plane_arch']} trained from scratch for {settings['plane_epochs']} "
        f"epochs on {result.get('plane_train_images', settings['plane_train'])} training "
        "images, measured after each epoch "
        f"on {plane['n']} fixed test images: I(X;Z) and I(Z;Y) of each stage's "
        "global-average-pooled output, with two estimators: "
        f"{html.escape(texts[0])}; {html.escape(texts[1])}. With many units and few "
        "images, binning gives every image its own bin tuple, so I(X;Z) = log2 N and "
        "I(Z;Y) = H(Y) at once (a known limit of that estimator); the KDE bound moves. "
        "Transition point = epoch of maximal I(X;Z); convergence point = first epoch from "
        "which both quantities stay within 5 % of their range of their last value (our "
        "definition; paper 000 gives none). Accuracy on the measured test images.</p>",
        figure_html(information_plane_plot(plane), "information plane"),
        table_html(key_rows),
        "<p><code>cnnlens drib prune-baseline --model RUN --method all --reduction 50 --epochs "
        "N</code> writes this table for a trained model; <code>cnnlens drib train --plane"
        "</code> measures the information plane of the gated network itself (both phases); "
        "<code>cnnlens.studies.drib.information_plane.InformationPlane</code> is a callback for "
        "any training through <code>cnnlens.train.fit</code>.</p>",
    ]
    return "\n".join(parts)

"""Report section "Dynamic channel gating": DRIB (paper 000) on the report's model.

Shown when the run trained a gated model (``ReportContext.options["drib_run"]``: a
:class:`cnnlens.studies.drib.runs.GatedRun` with its ungated ``options["drib_base"]``; the
demo gates its trained ResNet-20 once and reuses it). It shows the MAC / accuracy table, the
reduction ratio, latency (ungated, dense-masked gated, sparse), credibility per layer, the Table-5
comparison and the usage heatmaps with purity. The measurements are cached in
``<run>/report-cache.json`` (keyed by the run and the settings), so a second report reuses
them, latency included (measured when the cache was written).

Hooks for parts built elsewhere: ``options["drib_baselines"]``, either rows
``{"method", "macs", "accuracy"}`` added to the MAC table, or ``True``: L1 filter pruning
and network slimming at the gated model's mean MAC count, measured (and cached) by the
section "Pruning baselines and the information plane", which then shows them in full;
``options["drib_parts"]``, callables ``fn(ctx) -> html | None`` appended at the end.
"""

from __future__ import annotations

from pathlib import Path

from .. import ReportContext, section, table_html
from ..figures import figure_html

CACHE = "report-cache.json"
USAGE_LAYERS = 3  # channel heatmaps: first, middle and last gated layer


def mac_rows(evaluation: dict, baselines: list[dict] | tuple = ()) -> list[dict]:
    """The MAC / accuracy table: ungated, gated, then any ``baselines`` rows."""
    before = evaluation["ungated"]["macs"]
    gated = evaluation["gated"]

    def row(method: str, macs: float, accuracy: float) -> dict:
        return {
            "method": method,
            "MACs (M)": f"{macs / 1e6:.2f}",
            "reduction (%)": f"{100 * (before - macs) / before:.1f}",
            "accuracy (%)": f"{100 * accuracy:.2f}",
        }

    rows = [
        row("ungated", before, evaluation["ungated"]["accuracy"]),
        row("DRIB gated (mean dynamic MACs)", gated["macs"], gated["accuracy"]),
    ]
    rows += [row(b["method"], float(b["macs"]), float(b["accuracy"])) for b in baselines]
    return rows


def cached_study(run, base, ctx: ReportContext, settings: dict) -> dict:
    from ...runs import measured
    from ...studies.drib.study import study

    key = {"identity": run.evaluation, "settings": settings, "n_test": len(ctx.test)}
    return measured(
        Path(run.folder) / CACHE,
        key,
        lambda: study(base, run.model, ctx.train, ctx.test, settings=settings, parts=_parts(ctx)),
    )


def _parts(ctx: ReportContext) -> tuple[str, ...]:
    parts = ("macs", "latency", "credibility", "usage")
    return parts + ("attribution",) if ctx.test.boxes is not None else parts


def _baseline_rows(ctx: ReportContext) -> list[dict] | tuple:
    """The static baselines' rows for the MAC table (module docstring, hooks)."""
    wanted = ctx.options.get("drib_baselines", ())
    if wanted is not True:
        return wanted or ()
    from .drib_baselines import baseline_settings, cached_measure

    rows = cached_measure(ctx, baseline_settings(ctx))["rows"]
    return [
        {**r, "method": f"{r['method']} pruning (static, fine-tuned)"}
        for r in rows
        if r["method"] != "unpruned"
    ]


@section("drib", "Dynamic channel gating", order=85)
def drib_section(ctx: ReportContext) -> str | None:
    run = ctx.options.get("drib_run")
    base = ctx.options.get("drib_base")
    if run is None or base is None:
        return None
    from ...studies.drib.study import FULL, QUICK
    from ..drib_figures import channel_usage_heatmap, index_usage_heatmap

    quick = bool(ctx.options.get("quick"))
    result = cached_study(run, base, ctx, QUICK if quick else FULL)
    ev = result["macs"]
    n_gated = len(run.model.drib["gated"])
    parts = [
        "<p>DRIB (paper 000) with the gate and the training loss of Wang et al. (AAAI 2020, "
        "dynamic pruning), since paper 000 specifies neither; which layers are gated is "
        "cnnlens' choice, not the paper's. Each gated layer has "
        f"{run.model.drib['masks']} learned channel masks and a decision head that picks one "
        "per input from the globally pooled input; the mask multiplies the layer's output "
        f"after BatchNorm. {n_gated} layers of the model above are gated (ResNet: the first "
        "conv of every block). Heads and masks were trained with Adam alternating with the "
        "backbone (SGD), Gumbel-softmax straight-through, then the backbone was fine-tuned "
        f"with fixed decisions ({_epochs(run.history)}{_recipe(run.identity)}). Evaluated "
        f"on {ev['n_test']} test images.</p>",
        "<h3>Counted savings</h3>",
        table_html(mac_rows(ev, _baseline_rows(ctx))),
        f"<p>Reduction ratio (M<sub>before</sub> &minus; M<sub>after</sub>) / "
        f"M<sub>before</sub> = <b>{ev['reduction_ratio']:.1f} %</b> at an accuracy change of "
        f"<b>{-ev['accuracy_drop_pt']:+.2f} pt</b> (the issue's target: at least 50 % with at "
        "most 1 pt lost). A gated conv counts only its active output channels and the active "
        "channels of the gated layer it reads; the conv after a gated one reads only the "
        "active channels; the decision heads are counted.</p>",
    ]
    if "latency" in result:
        parts += [
            "<h3>Real savings: latency on this machine</h3>",
            "<p>Median milliseconds per batch (torch threads: "
            f"{result.get('torch_threads')}). The sparse path groups a batch by chosen mask "
            "and computes only the selected output channels from the active input channels; "
            "it folds BatchNorm into the convs and calls them directly, so the fair dense "
            "reference is the ungated model run by the same code with every channel ('same "
            "code'): the speedup against it is what computing fewer channels buys. Measured "
            "when this section's cache was written, on a machine that may have been busy.</p>",
            table_html([_latency_row(r) for r in result["latency"]], floatfmt="{:.2f}"),
        ]
    if "credibility" in result:
        cred = result["credibility"]
        rows = [
            {
                "layer": c["layer"],
                "kept channels": f"{c['kept']:.1f}",
                "credibility (%)": f"{100 * c['credibility']:.1f}",
                "chance (%)": f"{100 * c['chance']:.1f}",
                "bits in kept channels (%)": f"{100 * c['kept_bits']:.1f}",
            }
            for c in cred["layers"]
        ]
        o = cred["overall"]
        rows.append(
            {
                "layer": "mean",
                "kept channels": f"{o['kept']:.1f}",
                "credibility (%)": f"{100 * o['credibility']:.1f}",
                "chance (%)": f"{100 * o['chance']:.1f}",
                "bits in kept channels (%)": f"{100 * o['kept_bits']:.1f}",
            }
        )
        parts += [
            "<h3>Information-bottleneck credibility</h3>",
            "<p>Our construction of paper 000's unspecified check (it reports about 85 %): "
            "IBA at each gated layer's unmasked output of the ungated model gives each "
            "channel's information (bits); credibility is the share of the channels the "
            "decision keeps that are among the top-k channels by information, k = number "
            "kept (the share of top channels dropped is its complement). Chance = k / C, what "
            f"a random choice scores. {result['settings']['n_credibility']} test images.</p>",
            table_html(rows),
        ]
    if "attribution" in result:
        parts += [
            "<h3>Attribution from the gated model (Table 5 analogue)</h3>",
            "<p>IBA at the last gated layer against SmoothGrad, Grad-CAM and Guided Grad-CAM "
            f"on {result['settings']['n_attribution']} test images: decline of the target "
            "probability when the most relevant tiles are replaced first (IBA's 8x8 and 14x14 "
            "tiles at 224, scaled), LeRF &minus; MoRF, and the bounding-box score.</p>",
            table_html(result["attribution"], floatfmt="{:.3f}"),
        ]
    if "usage" in result:
        u = result["usage"]
        show = _spread(gates_of(u), USAGE_LAYERS)
        purity = [
            {
                "layer": name,
                "mean purity": sum(v) / len(v),
                "inputs on the most used mask (%)": 100 * _top_share(u, name),
            }
            for name, v in u["purity"].items()
        ]
        parts += [
            "<h3>Which paths each class takes</h3>",
            "<p>Share of each class's test images that chose each mask index per gated layer, "
            "and how often each class used each channel (first, middle and last gated layer). "
            "Purity of a class at a layer: the share of its images that chose its most "
            "frequent index (1 = one path per class). Where every input takes the same mask "
            "(100 % on the most used mask) the layer is pruned statically, not dynamically: "
            "the training can collapse onto one mask, as nothing in the loss spreads the "
            "choices.</p>",
            figure_html(index_usage_heatmap(u["index_freq"], u["classes"]), "mask index usage"),
            figure_html(
                channel_usage_heatmap({k: u["channel_freq"][k] for k in show}, u["classes"]),
                "channel usage",
            ),
            table_html(purity, floatfmt="{:.3f}"),
        ]
    for extra in ctx.options.get("drib_parts", ()):
        html = extra(ctx)
        if html:
            parts.append(html)
    return "\n".join(parts)


LATENCY_COLUMNS = (
    "ungated",
    "ungated (BN folded)",
    "ungated (sparse code, all channels)",
    "gated, dense x mask",
    "gated, sparse",
)


def _latency_row(row: dict) -> dict:
    out = {"batch": row["batch"], **{f"{k} (ms)": row[f"{k} (ms)"] for k in LATENCY_COLUMNS}}
    sparse = row["gated, sparse (ms)"]
    out["speedup vs ungated"] = f"{row['ungated (ms)'] / sparse:.2f}x"
    out["vs same code"] = f"{row['ungated (sparse code, all channels) (ms)'] / sparse:.2f}x"
    return out


def _top_share(usage: dict, layer: str) -> float:
    """Share of all inputs that chose the layer's most used mask index."""
    counts = usage["counts"]
    freq = usage["index_freq"][layer]
    rows = list(zip(freq, counts, strict=True))
    per_index = [sum(f[i] * n for f, n in rows) for i in range(len(freq[0]))]
    return max(per_index) / max(sum(counts), 1)


def gates_of(usage: dict) -> list[str]:
    return list(usage["index_freq"])


def _spread(names: list[str], k: int) -> list[str]:
    if len(names) <= k:
        return names
    idx = sorted({round(i * (len(names) - 1) / (k - 1)) for i in range(k)})
    return [names[i] for i in idx]


def _recipe(identity: dict) -> str:
    r = identity.get("recipe")
    if not r:
        return ""
    if r.get("penalty") == "l1":
        term = f"sparsity term {r['lam']:g} mean |mask|"
    else:
        term = f"sparsity term {r['lam']:g} (mean |mask| &minus; {r['density']:g})<sup>2</sup>"
    n = identity.get("n_train")
    return f"; {term}, gate lr {r['gate_lr']:g}" + (f", {n} training images" if n else "")


def _epochs(history: dict) -> str:
    g, f = len(history.get("gating", [])), len(history.get("finetune", []))
    return f"{g} gating and {f} fine-tuning epoch{'s' if f != 1 else ''}"

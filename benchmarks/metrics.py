"""cnnlens metrics vs Quantus 0.6: same model, images, maps and settings, one run.

Every row: cnnlens' seconds, its floor (the model passes the metric cannot avoid, at
the best batch: the least time over the candidate chunk sizes), the multiple of it,
Quantus' seconds and the ratio. Each row's calls run in interleaved rounds (cnnlens,
floor candidates, Quantus, again ...; the best round counts), so load on a shared
machine hits both sides; the row is printed (flushed) as soon as it is measured.
ResNet-20 (untrained weights: speed does not depend on them), 32x32 RGB, random maps.

Floors: forward-only metrics, their forwards; robustness metrics, the saliency
explanations of the N x S perturbed copies (one forward+backward each) plus, for the
relative stability metrics, the copies' forwards (their logits: the class check and
ROS' denominator). Axioms sizes (sane for a benchmark): non-sensitivity on the first
4 images cropped to 16x16 (256 forwards per image for cnnlens; Quantus' step must be
1 and counts channel-features: 768 batched forwards), the rest on all images.

Usage: python benchmarks/metrics.py [--n 8] [--threads 2] [--repeat 3]
       [--only robustness,axioms | --only avg-sensitivity,continuity]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

GROUPS = ("shared", "faithfulness", "localisation", "complexity", "robustness", "axioms")
FORWARD_BATCHES = (32, 64, 128)  # candidate chunks of a forward-only floor
BACKWARD_BATCHES = (16, 32, 64)  # and of a forward+backward (explanation) floor


@dataclass
class Row:
    """One metric: its cnnlens call, the passes it needs (words), its floor as parts
    (each a list of candidate-batch calls: the part costs its fastest), Quantus' call."""

    name: str
    group: str
    ours: Callable[[], object]
    passes: str = "-"
    floor: list[list[Callable[[], object]]] = field(default_factory=list)
    quantus: Callable[[], object] | None = None
    note: str = ""


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class Bench:
    """The shared model, images, maps and floors of every group."""

    def __init__(self, n: int) -> None:
        from cnnlens import nets

        torch.manual_seed(0)
        self.model = nets.create("resnet20", num_classes=8).eval()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 32, 32, generator=g)
        self.maps = torch.rand(n, 1, 32, 32, generator=g)
        self.masks = torch.zeros(n, 1, 32, 32, dtype=torch.bool)
        self.masks[:, :, 8:20, 10:24] = True
        with torch.no_grad():
            self.y = self.model(self.x).argmax(1)
        self.n = n
        try:
            import quantus
        except ImportError:
            quantus = None
        self.quantus = quantus

    def forwards(self, total: int, x: torch.Tensor | None = None) -> list:
        """Floor part: ``total`` plain forwards of images like ``x``, one per candidate batch."""
        x = self.x if x is None else x

        def run(size: int) -> None:
            with torch.no_grad():
                for s in range(0, total, size):
                    self.model(x[:1].expand(min(size, total - s), -1, -1, -1).contiguous())

        return [lambda b=b: run(b) for b in sorted({min(b, total) for b in FORWARD_BATCHES})]

    def saliency(self, model, xs, t, batch_size=None):
        from cnnlens import explain

        kw = {} if batch_size is None else {"batch_size": batch_size}
        return explain(model, xs, method="saliency", target=t, **kw).maps

    def explanations(self, copies: int) -> list:
        """Floor part: saliency of ``copies`` copies of every image, per candidate batch."""
        big = self.x.repeat_interleave(copies, 0)
        yb = self.y.repeat_interleave(copies)
        sizes = sorted({min(b, len(big)) for b in BACKWARD_BATCHES})
        return [lambda b=b: self.saliency(self.model, big, yb, b) for b in sizes]

    def q_saliency(self, model, inputs, targets, **_):
        xt, t = torch.as_tensor(np.asarray(inputs)), torch.as_tensor(np.asarray(targets))
        return self.saliency(model, xt, t).numpy()

    def q_call(self, cls: str, settings: dict, **given):
        """A Quantus call on this bench's model, images, labels and maps (``given`` wins)."""
        if self.quantus is None:
            return None
        metric = getattr(self.quantus, cls)(**settings, disable_warnings=True)
        kw = dict(model=self.model, x_batch=self.x.numpy(), y_batch=self.y.numpy(),
                  a_batch=self.maps.numpy(), device="cpu")  # fmt: skip
        kw.update({k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in given.items()})
        return lambda: metric(**kw)


def shared_rows(b: Bench) -> list[Row]:
    """Quantus needs features_in_step | H*W but counts channel-features: 64 features = 48
    forwards per image; cnnlens step 22 px gives ceil(1024/22) + 1 = 48 forwards too."""
    from cnnlens import metrics

    n, step, tile = b.n, 22, 4
    steps = -(-1024 // step) + 1
    frac = torch.arange(65) / 64
    m, x, maps, masks = b.model, b.x, b.maps, b.masks
    soft = dict(softmax=True, batch_size=n)
    loc = dict(model=None, s_batch=masks.numpy().astype(float))
    return [
        Row("deletion", "shared", lambda: metrics.deletion(m, x, maps, step=step),
            f"{steps} fwd/img", [b.forwards(n * steps)],
            b.q_call("PixelFlipping", dict(features_in_step=64, perturb_baseline=0.0), **soft)),
        Row("insertion", "shared", lambda: metrics.insertion(m, x, maps, step=step),
            f"{steps} fwd/img", [b.forwards(n * steps)]),
        Row("degradation", "shared",
            lambda: metrics.degradation(m, x, maps, tile=tile, fractions=frac),
            "2x65 fwd/img", [b.forwards(n * 2 * 65)],
            b.q_call("RegionPerturbation", dict(patch_size=tile, regions_evaluation=64,
                                                perturb_baseline=0.0), **soft),
            "Quantus runs MoRF only (65 fwd/img): ratio per MoRF curve"),
        Row("pointing-game", "shared",
            lambda: metrics.pointing_game(None, None, maps, masks=masks),
            quantus=b.q_call("PointingGame", {}, **loc)),
        Row("energy-pointing-game", "shared",
            lambda: metrics.energy_pointing_game(None, None, maps, masks=masks),
            quantus=b.q_call("AttributionLocalisation", {}, **loc)),
    ]  # fmt: skip


def faithfulness_rows(b: Bench) -> list[Row]:
    """Same forwards per image on both sides: 24 pixel groups (43 px; Quantus 128
    channel-features), 64 patches (4 px), 20 random subsets, 24 groups x 4 fills. IROF:
    Quantus' IROF fails on RGB images (its [N,1,H,W] mask), so no Quantus column."""
    from cnnlens.metrics.faithfulness_correlation import faithfulness_correlation
    from cnnlens.metrics.faithfulness_estimate import faithfulness_estimate
    from cnnlens.metrics.irof import irof
    from cnnlens.metrics.monotonicity import monotonicity_arya, monotonicity_nguyen
    from cnnlens.metrics.selectivity import selectivity

    n, m, x, maps = b.n, b.model, b.x, b.maps
    segments = int(irof(m, x, maps).extras["segments"].sum())
    q0 = dict(perturb_baseline=0.0)
    soft = dict(softmax=True, batch_size=n)
    return [
        Row("faithfulness-correlation", "faithfulness",
            lambda: faithfulness_correlation(m, x, maps, runs=20, baseline=0.0),
            "20 fwd/img", [b.forwards(n * 20)],
            b.q_call("FaithfulnessCorrelation", dict(nr_runs=20, subset_size=15, **q0), **soft)),
        Row("faithfulness-estimate", "faithfulness",
            lambda: faithfulness_estimate(m, x, maps, step=43), "24 fwd/img",
            [b.forwards(n * 24)],
            b.q_call("FaithfulnessEstimate", dict(features_in_step=128, **q0), **soft)),
        Row("monotonicity-arya", "faithfulness",
            lambda: monotonicity_arya(m, x, maps, step=43), "24 fwd/img", [b.forwards(n * 24)],
            b.q_call("Monotonicity", dict(features_in_step=128, **q0), **soft)),
        Row("monotonicity-nguyen", "faithfulness",
            lambda: monotonicity_nguyen(m, x, maps, step=43, samples=4), "96 fwd/img",
            [b.forwards(n * 96)],
            b.q_call("MonotonicityCorrelation", dict(features_in_step=128, nr_samples=4),
                     **soft)),
        Row("irof", "faithfulness", lambda: irof(m, x, maps), f"{segments} fwd in all",
            [b.forwards(segments)], note="Quantus' IROF fails on RGB"),
        Row("selectivity", "faithfulness", lambda: selectivity(m, x, maps, patch=4),
            "65 fwd/img", [b.forwards(n * 65)],
            b.q_call("Selectivity", dict(patch_size=4, **q0), **soft)),
    ]  # fmt: skip


def map_rows(b: Bench, group: str) -> list[Row]:
    """Localisation and complexity: no model pass, so no floor."""
    from cnnlens.metrics import attribution_localisation as al
    from cnnlens.metrics import complexity as cx
    from cnnlens.metrics import relevance, roc_auc
    from cnnlens.metrics import top_k_intersection as tk

    maps, masks = b.maps, b.masks
    loc = dict(model=None, s_batch=masks.numpy().astype(float))
    cpx = dict(model=None)
    table = {
        "localisation": [
            ("relevance-mass-accuracy", relevance.relevance_mass_accuracy,
             "RelevanceMassAccuracy", {}),
            ("relevance-rank-accuracy", relevance.relevance_rank_accuracy,
             "RelevanceRankAccuracy", {}),
            ("top-k-intersection", tk.top_k_intersection, "TopKIntersection", dict(k=20)),
            ("attribution-localisation", al.attribution_localisation,
             "AttributionLocalisation", {}),
            ("auc", roc_auc.roc_auc, "AUC", {}),
        ],
        "complexity": [
            ("sparseness", cx.sparseness, "Sparseness", {}),
            ("complexity", cx.complexity, "Complexity", {}),
            ("effective-complexity", cx.effective_complexity, "EffectiveComplexity", {}),
        ],
    }  # fmt: skip
    given = loc if group == "localisation" else cpx
    kw = dict(masks=masks) if group == "localisation" else {}
    return [
        Row(name, group, lambda f=f: f(None, None, maps, **kw),
            quantus=b.q_call(cls, settings, **given))
        for name, f, cls, settings in table[group]
    ]  # fmt: skip


def robustness_rows(b: Bench, samples: int = 5) -> list[Row]:
    """Floor: the saliency explanations of the N x samples perturbed copies (one
    forward+backward each), plus their forwards for the stability metrics. Quantus'
    continuity shifts -W + k (2W+1)//steps: 6 steps = cnnlens' shifts below plus its
    no-op 0 (7 explanations vs 6); steps dividing 2W+1 (5, 13 at W=32) crash it."""
    from cnnlens.metrics import lipschitz, sensitivity, stability

    m, x, maps, y = b.model, b.x, b.maps, b.y
    kw = dict(method=b.saliency, samples=samples)
    shifts = [-22, -12, -2, 8, 18, 28]
    rob = dict(explain_func=b.q_saliency)
    qs = dict(nr_samples=samples)
    expl, cont = b.explanations(samples), b.explanations(len(shifts))
    both = [expl, b.forwards(b.n * samples)]
    per = f"{samples} sal/img"
    return [
        Row("avg-sensitivity", "robustness",
            lambda: sensitivity.avg_sensitivity(m, x, maps, y, **kw), per, [expl],
            b.q_call("AvgSensitivity", qs, **rob)),
        Row("max-sensitivity", "robustness",
            lambda: sensitivity.max_sensitivity(m, x, maps, y, **kw), per, [expl],
            b.q_call("MaxSensitivity", qs, **rob)),
        Row("local-lipschitz-estimate", "robustness",
            lambda: lipschitz.local_lipschitz_estimate(m, x, maps, y, **kw), per, [expl],
            b.q_call("LocalLipschitzEstimate", qs, **rob)),
        Row("continuity", "robustness",
            lambda: lipschitz.continuity(m, x, maps, y, method=b.saliency, shifts=shifts),
            f"{len(shifts)} sal/img", [cont], b.q_call("Continuity", dict(nr_steps=6), **rob),
            "Quantus: 7 sal/img (its shift 0 too)"),
        Row("relative-input-stability", "robustness",
            lambda: stability.relative_input_stability(m, x, maps, y, **kw),
            per + f" + {samples} fwd/img", both,
            b.q_call("RelativeInputStability", qs, **rob)),
        Row("relative-output-stability", "robustness",
            lambda: stability.relative_output_stability(m, x, maps, y, **kw),
            per + f" + {samples} fwd/img", both,
            b.q_call("RelativeOutputStability", qs, **rob)),
    ]  # fmt: skip


def axioms_rows(b: Bench) -> list[Row]:
    """Sensitivity-n: 24 forwards per image on both sides (cnnlens 3 sizes x 8 subsets,
    Quantus 24 steps of 128 channel-features). Non-sensitivity: see the module docstring
    (4 images, 16x16). Random logit and input invariance: their floor is one saliency
    explanation (the re-explanation they add), Quantus given the same explain function."""
    import cnnlens
    from cnnlens.metrics.input_invariance import input_invariance
    from cnnlens.metrics.non_sensitivity import non_sensitivity
    from cnnlens.metrics.random_logit import random_logit
    from cnnlens.metrics.sensitivity_n import sensitivity_n
    from cnnlens.metrics.sufficiency import sufficiency

    n, m, x, maps, y = b.n, b.model, b.x, b.maps, b.y
    e = cnnlens.explain(m, x, method="saliency", target=y)
    once = [[lambda: b.saliency(m, x, y)]]
    xs, ms, ys = x[:4, :, 8:24, 8:24].contiguous(), maps[:4, :, 8:24, 8:24].contiguous(), y[:4]
    return [
        Row("sensitivity-n", "axioms",
            lambda: sensitivity_n(m, x, maps, y, sizes=[10, 100, 800], runs=8), "24 fwd/img",
            [b.forwards(n * 24)],
            b.q_call("SensitivityN", dict(features_in_step=128, n_max_percentage=1.0,
                                          perturb_baseline=0.0), batch_size=n)),
        Row("sufficiency", "axioms", lambda: sufficiency(m, x, maps), "1 fwd/img",
            [b.forwards(n)], b.q_call("Sufficiency", {}, batch_size=n)),
        Row("random-logit", "axioms", lambda: random_logit(m, x, e), "1 sal/img", once,
            b.q_call("RandomLogit", dict(num_classes=8), explain_func=b.q_saliency,
                     a_batch=e.maps, batch_size=n)),
        Row("non-sensitivity", "axioms", lambda: non_sensitivity(m, xs, ms, ys),
            "256 fwd/img (4 imgs 16x16)", [b.forwards(4 * 256, xs)],
            b.q_call("NonSensitivity", dict(features_in_step=1, perturb_baseline=0.0),
                     x_batch=xs, a_batch=ms, y_batch=ys, batch_size=4),
            "Quantus: 768 channel-feature passes"),
        Row("input-invariance", "axioms", lambda: input_invariance(m, x, e), "1 sal/img", once,
            b.q_call("InputInvariance", {}, explain_func=b.q_saliency, a_batch=e.maps,
                     batch_size=n)),
    ]  # fmt: skip


BUILDERS = {
    "shared": shared_rows,
    "faithfulness": faithfulness_rows,
    "localisation": lambda b: map_rows(b, "localisation"),
    "complexity": lambda b: map_rows(b, "complexity"),
    "robustness": robustness_rows,
    "axioms": axioms_rows,
}


def measure(row: Row, repeat: int) -> tuple[float, float | None, float | None]:
    """Best seconds of cnnlens, its floor (each part at its fastest candidate) and
    Quantus, over ``repeat`` interleaved rounds after one warm-up round."""
    fns = {"ours": row.ours}
    for i, part in enumerate(row.floor):
        fns.update({f"floor{i}/{j}": f for j, f in enumerate(part)})
    if row.quantus is not None:
        fns["quantus"] = row.quantus
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn))
    floor = None
    if row.floor:
        floor = sum(
            min(best[f"floor{i}/{j}"] for j in range(len(part))) for i, part in enumerate(row.floor)
        )
    return best["ours"], floor, best.get("quantus")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="", help=f"comma-separated groups ({', '.join(GROUPS)}) "
                    "or metric ids; default: everything")  # fmt: skip
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    bench = Bench(args.n)
    print(f"ResNet-20, {args.n} images 32x32 RGB, {args.threads} threads, best of "
          f"{args.repeat} interleaved rounds; Quantus: "
          f"{'0.6' if bench.quantus else 'not installed'}", flush=True)  # fmt: skip
    print("| metric | group | passes | cnnlens s | floor s | x floor | Quantus s | Quantus / "
          "cnnlens | note |\n" + "|---" * 9 + "|", flush=True)  # fmt: skip
    found, ids = set(), wanted - set(GROUPS)
    for group in GROUPS:
        if wanted and group not in wanted and not ids:
            continue  # (a metric id may be in any group: its rows are built to find it)
        rows = BUILDERS[group](bench)
        for row in rows:
            if wanted and group not in wanted and row.name not in wanted:
                continue
            found.add(row.name)
            t, floor, tq = measure(row, args.repeat)
            fs, xf = ("-", "-") if floor is None else (f"{floor:.4f}", f"{t / floor:.2f}")
            qs, ratio = ("-", "-") if tq is None else (f"{tq:.4f}", f"{tq / t:.1f}")
            if tq is not None and row.name == "degradation":
                ratio = f"{tq / (t / 2):.1f}"
            print(f"| {row.name} | {group} | {row.passes} | {t:.4f} | {fs} | {xf} | {qs} | "
                  f"{ratio} | {row.note} |", flush=True)  # fmt: skip
    unknown = wanted - set(GROUPS) - found
    if unknown:
        sys.exit(f"--only: unknown group or metric id {sorted(unknown)}; groups: {GROUPS}")


if __name__ == "__main__":
    main()

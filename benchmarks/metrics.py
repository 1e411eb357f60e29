"""cnnlens metrics vs Quantus 0.6: same model, images, maps and settings, one run.

Reports seconds, the forward floor (the same number of plain forwards in the
same chunks: the cost no perturbation metric can avoid) and ratios. ResNet-20
(untrained weights: speed does not depend on them), 32x32 RGB, random maps.
Usage: python benchmarks/metrics.py [--n 16] [--threads 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--group", default="all", help="all, shared, faithfulness or axioms")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from cnnlens import metrics, nets
    from cnnlens.chunking import chunk_size

    torch.manual_seed(0)
    model = nets.create("resnet20", num_classes=8).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, 3, 32, 32, generator=g)
    maps = torch.rand(args.n, 1, 32, 32, generator=g)
    masks = torch.zeros(args.n, 1, 32, 32, dtype=torch.bool)
    masks[:, :, 8:20, 10:24] = True
    with torch.no_grad():
        y = model(x).argmax(1)
    size = chunk_size(model, x, backward=False)

    def floor_run(total: int) -> None:
        with torch.no_grad():
            for s in range(0, total, size):
                model(x[:1].expand(min(size, total - s), -1, -1, -1).contiguous())

    if args.group == "faithfulness":
        return faithfulness_group(model, x, maps, y, floor_run, args)
    if args.group == "axioms":
        return axioms_group(model, x, maps, y, floor_run, args)
    # Quantus needs features_in_step | H*W but counts channel-features: 64 features = 48
    # forwards per image; cnnlens step 22 px gives ceil(1024/22) + 1 = 48 forwards too.
    step, q_features, tile = 22, 64, 4
    steps = -(-1024 // step) + 1
    frac = torch.arange(65) / 64
    fns = {
        "deletion": lambda: metrics.deletion(model, x, maps, step=step),
        "insertion": lambda: metrics.insertion(model, x, maps, step=step),
        "degradation": lambda: metrics.degradation(model, x, maps, tile=tile, fractions=frac),
        "pointing": lambda: metrics.pointing_game(None, None, maps, masks=masks),
        "energy": lambda: metrics.energy_pointing_game(None, None, maps, masks=masks),
        "floor": lambda: floor_run(args.n * steps),
        "floor_deg": lambda: floor_run(args.n * 2 * 65),
        "floor_morf": lambda: floor_run(args.n * 65),
    }
    try:
        import quantus

        xn, yn, an, sn = x.numpy(), y.numpy(), maps.numpy(), masks.numpy().astype(float)
        kw = dict(model=model, x_batch=xn, y_batch=yn, a_batch=an, device="cpu", softmax=True)
        pf = quantus.PixelFlipping(features_in_step=q_features, perturb_baseline=0.0,
                                   disable_warnings=True)  # fmt: skip
        rp = quantus.RegionPerturbation(patch_size=tile, regions_evaluation=64,
                                        perturb_baseline=0.0, disable_warnings=True)  # fmt: skip
        pg = quantus.PointingGame(disable_warnings=True)
        al = quantus.AttributionLocalisation(disable_warnings=True)
        kl = dict(kw, model=None, s_batch=sn)
        fns["q_deletion"] = lambda: pf(**kw, batch_size=args.n)
        fns["q_morf"] = lambda: rp(**kw, batch_size=args.n)
        fns["q_pointing"] = lambda: pg(**kl)
        fns["q_energy"] = lambda: al(**kl)
    except ImportError:
        pass
    # interleaved rounds: every function runs once per round, the best round counts,
    # so slow drift of the (shared, virtualised) CPU hits all of them alike
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(args.repeat):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn))
    t_del, t_ins, t_deg = best["deletion"], best["insertion"], best["degradation"]
    t_pg, t_epg = best["pointing"], best["energy"]
    fl, fl_deg, fl_morf = best["floor"], best["floor_deg"], best["floor_morf"]
    q = {k[2:]: v for k, v in best.items() if k.startswith("q_")}
    rows = [
        (f"deletion ({steps} forwards)", t_del, fl, q.get("deletion"), fl),
        (f"insertion ({steps} forwards)", t_ins, fl, None, fl),
        ("degradation MoRF+LeRF (2x65)", t_deg, fl_deg, q.get("morf"), fl_morf),
        ("pointing game", t_pg, None, q.get("pointing"), None),
        ("energy pointing game", t_epg, None, q.get("energy"), None),
    ]
    print(f"ResNet-20, {args.n} images 32x32, {args.threads} threads, chunk {size}")
    print("| metric | cnnlens s | x floor | Quantus s | Quantus x its floor | Quantus / cnnlens |")
    print("|---|---|---|---|---|---|")
    for name, t, f, tq, fq in rows:
        xf = f"{t / f:.2f}" if f else "-"
        qs = f"{tq:.3f}" if tq is not None else "-"
        qf = f"{tq / fq:.2f}" if (tq is not None and fq) else "-"
        if tq is None:
            ratio = "-"
        elif name.startswith("degradation"):
            ratio = f"{tq / (t / 2):.2f} (per MoRF curve)"
        else:
            ratio = f"{tq / t:.2f}"
        print(f"| {name} | {t:.3f} | {xf} | {qs} | {qf} | {ratio} |")
    print(f"insertion / deletion time: {t_ins / t_del:.2f}")
    if args.group in ("all", "faithfulness"):
        faithfulness_group(model, x, maps, y, floor_run, args)
    if args.group == "all":
        axioms_group(model, x, maps, y, floor_run, args)
    _ = np
    robustness_localisation_complexity(model, x, maps, masks, y, args.repeat)


# --- issue 33: robustness, localisation and complexity group ------------------------------


def robustness_localisation_complexity(model, x, maps, masks, y, repeat: int, samples: int = 5):
    """cnnlens vs Quantus on the group's metrics; robustness floor: the saliency passes on
    the N x samples perturbed copies in one call (what no robustness metric can avoid)."""
    from cnnlens import explain
    from cnnlens.metrics import attribution_localisation as al
    from cnnlens.metrics import complexity as cx
    from cnnlens.metrics import lipschitz, relevance, roc_auc, sensitivity, stability
    from cnnlens.metrics import top_k_intersection as tk

    def sal(m, xs, t):
        return explain(m, xs, method="saliency", target=t).maps

    big = x.repeat_interleave(samples, 0)
    kw = dict(method=sal, samples=samples)
    ours = {
        "relevance-mass-accuracy": lambda: relevance.relevance_mass_accuracy(
            None, None, maps, masks=masks
        ),
        "relevance-rank-accuracy": lambda: relevance.relevance_rank_accuracy(
            None, None, maps, masks=masks
        ),
        "top-k-intersection": lambda: tk.top_k_intersection(None, None, maps, masks=masks),
        "attribution-localisation": lambda: al.attribution_localisation(
            None, None, maps, masks=masks
        ),
        "auc": lambda: roc_auc.roc_auc(None, None, maps, masks=masks),
        "sparseness": lambda: cx.sparseness(None, None, maps),
        "complexity": lambda: cx.complexity(None, None, maps),
        "effective-complexity": lambda: cx.effective_complexity(None, None, maps),
        "avg-sensitivity": lambda: sensitivity.avg_sensitivity(model, x, maps, y, **kw),
        "local-lipschitz-estimate": lambda: lipschitz.local_lipschitz_estimate(
            model, x, maps, y, **kw
        ),
        "continuity": lambda: lipschitz.continuity(
            model, x, maps, y, method=sal, shifts=[-22, -12, -2, 8, 18, 28]
        ),
        "relative-input-stability": lambda: stability.relative_input_stability(
            model, x, maps, y, **kw
        ),
        "relative-output-stability": lambda: stability.relative_output_stability(
            model, x, maps, y, **kw
        ),
    }
    floor = lambda: sal(model, big, y.repeat_interleave(samples))  # noqa: E731
    theirs = {}
    try:
        import quantus

        def qex(model, inputs, targets, **k):
            return sal(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()

        xn, yn, an, sn = x.numpy(), y.numpy(), maps.numpy(), masks.numpy().astype(float)
        loc = dict(model=None, x_batch=xn, y_batch=yn, a_batch=an, s_batch=sn, device="cpu")
        cpx = dict(model=None, x_batch=xn, y_batch=yn, a_batch=an, device="cpu")
        rob = dict(model=model, x_batch=xn, y_batch=yn, a_batch=an, device="cpu", explain_func=qex)
        q = dict(disable_warnings=True)
        qs = dict(q, nr_samples=samples)
        theirs = {
            "relevance-mass-accuracy": (quantus.RelevanceMassAccuracy(**q), loc),
            "relevance-rank-accuracy": (quantus.RelevanceRankAccuracy(**q), loc),
            "top-k-intersection": (quantus.TopKIntersection(k=20, **q), loc),
            "attribution-localisation": (quantus.AttributionLocalisation(**q), loc),
            "auc": (quantus.AUC(**q), loc),
            "sparseness": (quantus.Sparseness(**q), cpx),
            "complexity": (quantus.Complexity(**q), cpx),
            "effective-complexity": (quantus.EffectiveComplexity(**q), cpx),
            "avg-sensitivity": (quantus.AvgSensitivity(**qs), rob),
            "local-lipschitz-estimate": (quantus.LocalLipschitzEstimate(**qs), rob),
            # Quantus' shifts -W + k (2W+1)//steps: 6 steps = cnnlens' shifts above plus its
            # no-op 0 (7 passes vs 6); steps dividing 2W+1 (5, 13 at W=32) crash it (index -33)
            "continuity": (quantus.Continuity(nr_steps=6, **q), rob),
            "relative-input-stability": (quantus.RelativeInputStability(**qs), rob),
            "relative-output-stability": (quantus.RelativeOutputStability(**qs), rob),
        }
    except ImportError:
        pass
    fns = {**{f"c/{k}": v for k, v in ours.items()}, "floor": floor}
    fns.update({f"q/{k}": (lambda m=m, a=a: m(**a)) for k, (m, a) in theirs.items()})
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeat):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn))
    print(f"\nrobustness/localisation/complexity: {len(x)} images, {samples} perturbations")
    print("| metric | cnnlens s | x floor | Quantus s | Quantus / cnnlens |")
    print("|---|---|---|---|---|")
    for name in ours:
        t, tq = best[f"c/{name}"], best.get(f"q/{name}")
        robust = name in ("avg-sensitivity", "local-lipschitz-estimate", "continuity",
                          "relative-input-stability", "relative-output-stability")  # fmt: skip
        xf = f"{t / best['floor']:.2f}" if robust else "-"
        qs_ = f"{tq:.4f}" if tq is not None else "-"
        ratio = f"{tq / t:.1f}" if tq is not None else "-"
        print(f"| {name} | {t:.4f} | {xf} | {qs_} | {ratio} |")


# ---- issue 33, faithfulness group (faithfulness-correlation ... selectivity) ----------
def faithfulness_group(model, x, maps, y, floor_run, args) -> None:
    """Same forwards per image on both sides: 24 pixel groups (43 px; Quantus 128
    channel-features), 64 patches (4 px), 20 random subsets, 24 groups x 4 fills. IROF:
    Quantus' IROF fails on RGB images (its [N,1,H,W] mask), so no Quantus column."""
    from cnnlens.metrics.faithfulness_correlation import faithfulness_correlation
    from cnnlens.metrics.faithfulness_estimate import faithfulness_estimate
    from cnnlens.metrics.irof import irof
    from cnnlens.metrics.monotonicity import monotonicity_arya, monotonicity_nguyen
    from cnnlens.metrics.selectivity import selectivity

    n = args.n
    segments = int(irof(model, x, maps).extras["segments"].sum())
    q0 = dict(perturb_baseline=0.0, disable_warnings=True)
    rows = {  # name: (cnnlens call, forwards, (Quantus class, its settings) or None)
        "faithfulness-correlation": (
            lambda: faithfulness_correlation(model, x, maps, runs=20, baseline=0.0),
            n * 20, ("FaithfulnessCorrelation", dict(nr_runs=20, subset_size=15, **q0))),
        "faithfulness-estimate": (
            lambda: faithfulness_estimate(model, x, maps, step=43),
            n * 24, ("FaithfulnessEstimate", dict(features_in_step=128, **q0))),
        "monotonicity-arya": (
            lambda: monotonicity_arya(model, x, maps, step=43),
            n * 24, ("Monotonicity", dict(features_in_step=128, **q0))),
        "monotonicity-nguyen": (
            lambda: monotonicity_nguyen(model, x, maps, step=43, samples=4),
            n * 96, ("MonotonicityCorrelation",
                     dict(features_in_step=128, nr_samples=4, disable_warnings=True))),
        "irof": (lambda: irof(model, x, maps), segments, None),
        "selectivity": (
            lambda: selectivity(model, x, maps, patch=4),
            n * 65, ("Selectivity", dict(patch_size=4, **q0))),
    }  # fmt: skip
    fns = {}
    for name, (ours, forwards, _make) in rows.items():
        fns[name] = ours
        fns["floor " + name] = lambda f=forwards: floor_run(f)
    try:
        import quantus

        kw = dict(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps.numpy(),
                  device="cpu", softmax=True, batch_size=n)  # fmt: skip
        for name, (_, _, make) in rows.items():
            if make is not None:
                metric = getattr(quantus, make[0])(**make[1])
                fns["quantus " + name] = lambda m=metric: m(**kw)
    except ImportError:
        pass
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(args.repeat):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn))
    print(f"\nfaithfulness group, {n} images 32x32 RGB, {args.threads} threads")
    print("| metric | forwards | cnnlens s | x floor | Quantus s | Quantus / cnnlens |")
    print("|---|---|---|---|---|---|")
    for name, (_, forwards, _) in rows.items():
        t, fl, tq = best[name], best["floor " + name], best.get("quantus " + name)
        qs, ratio = ("-", "-") if tq is None else (f"{tq:.3f}", f"{tq / t:.1f}")
        print(f"| {name} | {forwards} | {t:.3f} | {t / fl:.2f} | {qs} | {ratio} |")


# ---- issue 33, axioms group (sensitivity-n ... input-invariance) ----------------------
def axioms_group(model, x, maps, y, floor_run, args) -> None:
    """Sensitivity-n: 24 forwards per image on both sides (cnnlens 3 sizes x 8 subsets,
    Quantus 24 steps of 128 channel-features). Non-sensitivity: one forward per feature,
    cnnlens' features are pixels (1024), Quantus' channel-features (3072: its step must be
    1). Random logit and input invariance: their floor is one saliency explanation (the
    re-explanation they add), Quantus given the same explain function."""
    import cnnlens
    from cnnlens.metrics.input_invariance import input_invariance
    from cnnlens.metrics.non_sensitivity import non_sensitivity
    from cnnlens.metrics.random_logit import random_logit
    from cnnlens.metrics.sensitivity_n import sensitivity_n
    from cnnlens.metrics.sufficiency import sufficiency

    n = args.n
    e = cnnlens.explain(model, x, method="saliency", target=y)
    expl = e.maps

    def saliency(model, inputs, targets, **_):
        xt, t = torch.as_tensor(np.asarray(inputs)), torch.as_tensor(np.asarray(targets))
        return cnnlens.explain(model, xt, method="saliency", target=t).maps.numpy()

    def explain_once() -> None:
        cnnlens.explain(model, x, method="saliency", target=y)

    rows = {  # name: (cnnlens call, forwards, floor, (Quantus class, settings, extra) or None)
        "sensitivity-n": (
            lambda: sensitivity_n(model, x, maps, y, sizes=[10, 100, 800], runs=8),
            n * 24, lambda: floor_run(n * 24),
            ("SensitivityN", dict(features_in_step=128, n_max_percentage=1.0,
                                  perturb_baseline=0.0), {})),
        "sufficiency": (
            lambda: sufficiency(model, x, maps), n, lambda: floor_run(n),
            ("Sufficiency", {}, {})),
        "random-logit": (
            lambda: random_logit(model, x, e), "1 explanation", explain_once,
            ("RandomLogit", dict(num_classes=8), dict(explain_func=saliency, a_batch=expl))),
        "non-sensitivity": (
            lambda: non_sensitivity(model, x, maps, y), n * 1024, lambda: floor_run(n * 1024),
            ("NonSensitivity", dict(features_in_step=1, perturb_baseline=0.0), {})),
        "input-invariance": (
            lambda: input_invariance(model, x, e), "1 explanation", explain_once,
            ("InputInvariance", {}, dict(explain_func=saliency, a_batch=expl))),
    }  # fmt: skip
    fns = {}
    for name, (ours, _, floor, _make) in rows.items():
        fns[name] = ours
        fns["floor " + name] = floor
    try:
        import quantus

        kw = dict(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps.numpy(),
                  device="cpu", batch_size=n)  # fmt: skip
        for name, (_, _, _, make) in rows.items():
            metric = getattr(quantus, make[0])(**make[1], disable_warnings=True)
            extra = {
                k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in make[2].items()
            }
            fns["quantus " + name] = lambda m=metric, extra=extra: m(**{**kw, **extra})
    except ImportError:
        pass
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(args.repeat):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn))
    print(f"\naxioms group, {n} images 32x32 RGB, {args.threads} threads")
    print("| metric | forwards | cnnlens s | x floor | Quantus s | Quantus / cnnlens |")
    print("|---|---|---|---|---|---|")
    for name, (_, forwards, _, _) in rows.items():
        t, fl, tq = best[name], best["floor " + name], best.get("quantus " + name)
        qs, ratio = ("-", "-") if tq is None else (f"{tq:.3f}", f"{tq / t:.1f}")
        print(f"| {name} | {forwards} | {t:.3f} | {t / fl:.2f} | {qs} | {ratio} |")


if __name__ == "__main__":
    main()

"""The measurements the CLI and the report share: a pruning study (semantic vs random vs
lowest-L1, Fig. 7), the attribute-correlation table checked against the labels (Table 4), and
the correlations ``shapes`` builds in by construction.
"""

from __future__ import annotations

from ...errors import InputError
from .pruning import PruningCurve, SemanticPruner, l1_order, pruning_sweep, random_order
from .reading import ChannelRoles

FRACTIONS = (0.25, 0.5, 0.75)
# shapes (cnnlens.data.shapes docstring): pairs correlated by construction, with the sign
SHAPES_CORRELATED = {
    ("red", "warm"): +1,
    ("red", "green"): -1,
    ("red", "blue"): -1,
    ("green", "blue"): -1,
    ("green", "warm"): -1,
    ("blue", "warm"): -1,
    ("filled", "striped"): +1,
}
# ... and attributes drawn independently of each other (and of the colour)
SHAPES_INDEPENDENT = ("large", "left", "top", "filled", "bright")


def counts_for(channels: int, fractions=FRACTIONS) -> list[int]:
    """``[0]`` and the channel counts of each pruned fraction (rounded)."""
    bad = [f for f in fractions if not 0 < f < 1]
    if bad:
        raise InputError(f"pruned fractions must lie in (0, 1), got {bad}")
    return [0, *[int(round(f * channels)) for f in fractions]]


def pruning_study(
    model,
    train,
    test,
    *,
    prefer: str = "lower",
    seeds=(0, 1, 2),
    fractions=FRACTIONS,
    n_fit: int | None = 1000,
    n_eval: int | None = 500,
    correlation=None,
) -> tuple[dict[str, PruningCurve], SemanticPruner]:
    """Curves of mean accuracy against pruned channels: semantic (channel correlations on
    ``train``, as the paper uses the training data; ``correlation`` when already measured),
    random (one per seed) and lowest-L1."""
    pruner = SemanticPruner(prefer, n=n_fit).fit(model, train, correlation=correlation)
    counts = counts_for(model.feature_channels, fractions)
    orders = {
        f"semantic ({prefer} L1)": [pruner.order_],
        "random": [random_order(model.feature_channels, s) for s in seeds],
        "lowest L1": [l1_order(model)],
    }
    return pruning_sweep(model, test, orders, counts, n=n_eval), pruner


def pruning_table(curves: dict[str, PruningCurve], channels: int) -> str:
    """Markdown: one row per curve, mean accuracy (%, and spread over seeds) per pruned count."""
    counts = next(iter(curves.values())).counts
    head = "| order | " + " | ".join(f"{m}/{channels} pruned" for m in counts) + " |"
    rows = [head, "|---|" + "---:|" * len(counts)]
    for name, curve in curves.items():
        d = curve.to_dict()
        cells = []
        for mean, spread in zip(d["mean_accuracy"], d["spread"], strict=True):
            extra = f" ± {100 * spread:.1f}" if len(curve.accuracy) > 1 else ""
            cells.append(f"{100 * mean:.1f}{extra}")
        label = f"{name} ({len(curve.accuracy)} seeds)" if len(curve.accuracy) > 1 else name
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def correlation_table(roles: ChannelRoles, top: int = 5) -> str:
    """Markdown Table 4: per attribute the ``top`` most correlated attributes by their mask
    vectors (rho of the masks), with the correlation of the labels themselves beside it."""
    names = roles.attribute_names_
    rows = ["| attribute | most correlated (mask rho / label rho) |", "|---|---|"]
    for item in roles.most_correlated(top):
        k = names.index(item.attribute)
        cells = [
            f"{o} ({r:+.2f} / {float(roles.label_correlation_[k, names.index(o)]):+.2f})"
            for o, r in zip(item.others, item.correlations, strict=True)
        ]
        rows.append(f"| {item.attribute} | " + ", ".join(cells) + " |")
    return "\n".join(rows)


def construction_check(names: list[str], correlation) -> dict | None:
    """For ``shapes``: the mask correlation of the pairs correlated by construction against
    that of the independent pairs (None when the attributes are not shapes'), with the
    one-sided Mann-Whitney U test that the former's |rho| are larger (``p_larger``).

    ``names`` and ``correlation`` ``[K,K]`` (a tensor, an array or nested lists) are
    :class:`ChannelRoles`' ``attribute_names_`` and ``attribute_correlation_``, or the same
    entries of its :meth:`~ChannelRoles.to_dict`."""
    from scipy.stats import mannwhitneyu

    names = list(names)
    if not all(a in names and b in names for a, b in SHAPES_CORRELATED):
        return None

    def rho(a, b):
        return float(correlation[names.index(a)][names.index(b)])

    independent = [
        (a, b) for i, a in enumerate(SHAPES_INDEPENDENT) for b in SHAPES_INDEPENDENT[i + 1 :]
    ]
    built = {f"{a}-{b}": rho(a, b) for a, b in SHAPES_CORRELATED}
    free = {f"{a}-{b}": rho(a, b) for a, b in independent}
    larger = mannwhitneyu(
        [abs(v) for v in built.values()], [abs(v) for v in free.values()], alternative="greater"
    )
    return {
        "correlated_by_construction": built,
        "independent": free,
        "mean_abs_correlated": sum(abs(v) for v in built.values()) / len(built),
        "mean_abs_independent": sum(abs(v) for v in free.values()) / len(free),
        "p_larger": float(larger.pvalue),
    }


def roles_and_pruning(run, settings: dict) -> dict:
    """Everything the report shows of an attribute run (``run``: its ``model``, ``train``,
    ``test``), as JSON: the channel roles from ``settings["n_roles"]`` training images
    (Fig. 5, Table 4, Fig. 6), the semantic / random / L1 pruning curves over
    ``settings["seeds"]`` and ``["fractions"]`` (Fig. 7) and the accuracy under input noise
    per mask transformation (Fig. 8), on ``settings["n_eval"]`` test images."""
    from .robustness import TRANSFORMS, robustness_grid

    roles = ChannelRoles(n=settings["n_roles"]).fit(run.model, run.train)
    curves, _pruner = pruning_study(
        run.model,
        run.train,
        run.test,
        seeds=range(settings["seeds"]),
        fractions=settings["fractions"],
        n_fit=settings["n_roles"],
        n_eval=settings["n_eval"],
        correlation=roles.channel_correlation_,
    )
    return {
        "roles": roles.to_dict(),
        "channel_correlation": roles.channel_correlation_.float().tolist(),
        "correlation_table": correlation_table(roles),
        "curves": {k: v.to_dict() for k, v in curves.items()},
        "robustness": robustness_grid(
            run.model,
            run.test,
            stds=settings["noise_stds"],
            transforms=TRANSFORMS,
            n=settings["n_eval"],
        ).to_dict(),
    }


COMPARED = {"attention": "attribute network", "plain": "plain CNN", "resnet18": "ResNet-18"}
"""The models of :func:`model_comparison`, by their ``attribute_run`` kind."""


def model_comparison(out, *, kinds=tuple(COMPARED), **settings) -> dict:
    """Paper 003, Table 3, as far as cnnlens can run it: the attribute network, the plain
    multi-label CNN of the same extractor and a ResNet-18 multi-label head, each trained by
    :func:`~.training.attribute_run` (through :func:`cnnlens.train.fit`, summed BCE, the same
    data, epochs, optimiser and seed: the same budget) into ``out/<kind>`` or reused from
    there. ``settings``: :func:`~.training.attribute_run`'s (``data``, ``size``,
    ``n_train``, ``n_test``, ``epochs``, ``seed``, ...). Returns JSON: per model the test
    accuracy per attribute and its mean, training seconds and parameter count.

    The paper's Table 3 compares with other published multi-attribute models on CelebA;
    those are not rebuilt here."""
    from pathlib import Path

    from .training import attribute_run

    bad = [k for k in kinds if k not in COMPARED]
    if bad:
        raise InputError(f"unknown model kind {bad[0]!r}; known: {', '.join(COMPARED)}")
    rows = {}
    for kind in kinds:
        run = attribute_run(out=Path(out) / kind, kind=kind, **settings)
        rows[COMPARED[kind]] = {
            "kind": kind,
            "accuracy": dict(run.accuracy),
            "mean_accuracy": run.mean_accuracy,
            "seconds": run.seconds,
            "reused": run.reused,
            "parameters": sum(p.numel() for p in run.model.parameters()),
        }
    first = next(iter(rows.values()))
    return {"models": rows, "attributes": list(first["accuracy"]), "test_images": len(run.test)}


def comparison_table(result: dict) -> str:
    """Markdown of :func:`model_comparison`: one row per model, accuracy (%) per attribute
    and the mean."""
    names = result["attributes"]
    rows = [
        "| model | params | " + " | ".join(names) + " | mean |",
        "|---|---:|" + "---:|" * (len(names) + 1),
    ]
    for model, row in result["models"].items():
        cells = [f"{100 * row['accuracy'][a]:.1f}" for a in names]
        rows.append(
            f"| {model} | {row['parameters'] / 1e6:.2f} M | "
            + " | ".join(cells)
            + f" | {100 * row['mean_accuracy']:.1f} |"
        )
    return "\n".join(rows)

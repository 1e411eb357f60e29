"""Everything measured about one gated model, for ``cnnlens drib evaluate`` and the report.

:func:`study` returns a JSON-ready dict: accuracy and dynamic MACs of the
ungated and gated models with the reduction ratio, latency at batch 1 and 64
(ungated, BN-folded ungated, dense-masked gated, sparse), credibility per
layer, usage and purity, and the Table-5 comparison when the data has boxes.
``settings`` size the work (``QUICK`` for the demo's ``--quick``).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ...data.adapt import as_dataset
from ...progress import log_line
from .compare import attribution_table
from .credibility import credibility, overall
from .latency import latency_table
from .runs import evaluate_gated
from .usage import usage

FULL = {
    "n_credibility": 16,
    "n_attribution": 64,
    "n_statistics": 256,
    "iba_steps": 10,
    "iba_samples": 4,
    "smoothgrad_samples": 16,
    "fractions": 20,
    "latency_repeats": 15,
    "batches": [1, 64],
}
QUICK = {
    "n_credibility": 4,
    "n_attribution": 8,
    "n_statistics": 64,
    "iba_steps": 4,
    "iba_samples": 2,
    "smoothgrad_samples": 8,
    "fractions": 10,
    "latency_repeats": 3,
    "batches": [1, 64],
}


def study(
    base: nn.Module,
    gated: nn.Module,
    train,
    test,
    *,
    settings: dict | None = None,
    parts: tuple[str, ...] = ("macs", "latency", "credibility", "usage", "attribution"),
) -> dict:
    """Measure ``parts`` of a gated model against its ``base``; see the module docstring."""
    settings = {**FULL, **(settings or {})}
    train, test = as_dataset(train), as_dataset(test)
    base.eval()
    gated.eval()
    result: dict = {"settings": settings, "seconds": {}}
    stats_x, _ = train.tensors(range(min(settings["n_statistics"], len(train))))

    def timed(name, fn):
        t0 = time.perf_counter()
        result[name] = fn()
        result["seconds"][name] = time.perf_counter() - t0
        log_line(f"drib: {name} measured in {result['seconds'][name]:.1f} s")

    if "macs" in parts:
        timed("macs", lambda: evaluate_gated(base, gated, test))
    if "latency" in parts:
        x, _ = test.tensors(range(min(max(settings["batches"]), len(test))))
        timed(
            "latency",
            lambda: latency_table(
                base,
                gated,
                x,
                batches=tuple(settings["batches"]),
                repeats=settings["latency_repeats"],
            ),
        )
    if "credibility" in parts:
        x, _ = test.tensors(range(min(settings["n_credibility"], len(test))))

        def cred():
            layers = credibility(
                gated,
                x,
                statistics_images=stats_x,
                reference=base,
                steps=settings["iba_steps"],
                samples=settings["iba_samples"],
            )
            return {"layers": [c.to_dict() for c in layers], "overall": overall(layers)}

        timed("credibility", cred)
    if "usage" in parts:
        timed("usage", lambda: usage(gated, test).to_dict())
    if "attribution" in parts and test.boxes is not None:
        n = min(settings["n_attribution"], len(test))
        x, _ = test.tensors(range(n))
        boxes = test.boxes[:n]
        timed(
            "attribution",
            lambda: attribution_table(
                gated,
                x,
                boxes=boxes,
                statistics_images=stats_x,
                iba_steps=settings["iba_steps"],
                iba_samples=settings["iba_samples"],
                smoothgrad_samples=settings["smoothgrad_samples"],
                fractions=settings["fractions"],
            ),
        )
    result["torch_threads"] = torch.get_num_threads()
    return result

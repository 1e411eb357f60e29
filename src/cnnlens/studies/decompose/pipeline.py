"""The whole paper-002 analysis of one model, as the CLI and benchmarks run it.

:func:`run_decompose` fits the influential features on the training split,
scores the decomposed final layer on the test split (r_A, the k1/k2 sweep,
the noise ablation, in-mask energy where masks exist, class overlap),
optionally retrains the decomposed head (saved to ``out/retrained``, which
``cnnlens.load`` and every command can open), and writes
every table (JSON, CSV, markdown) and plot into ``out``. Penultimate features are computed once per
split and shared by every step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ...analysis.features import collect_features, locate_head
from ...analysis.tables import to_csv, to_markdown
from ...errors import InputError
from ...io import check_writable_folder, write_json, write_text
from ...loading.spec import model_data
from ...placement import model_device
from ...progress import log_line
from . import plots
from .ablation import noise_ablation
from .decomposed import save_decomposed
from .influential import InfluentialFeatures
from .maps import energy_table, influential_maps
from .overlap import jaccard_matrix, mean_overlap
from .relative import relative_accuracy, sweep, sweep_grid
from .retrain import retrain


def _rows_out(out: Path, stem: str, rows: list[dict]) -> None:
    write_json(out / f"{stem}.json", rows)
    write_text(out / f"{stem}.csv", to_csv(rows))
    write_text(out / f"{stem}.md", to_markdown(rows))


def ablation_rows(result: dict) -> list[dict]:
    """The noise-ablation result as table rows (per class, then overall)."""
    return [*result["per_class"], result["overall"]]


SWEEP_K = (1, 2, 3, 5, 8, 10, 15, 20)


def _positive(name: str, value: object, *, zero: bool = False) -> None:
    low = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")


def check_decompose(
    model: nn.Module,
    train,
    *,
    k1: int | str,
    k2: int,
    by: str,
    sweep_k: Sequence[int] | None,
    seeds: int,
    retrain_epochs: int,
    coverage: float = 0.9,
    map_images: int = 8,
    batch_size: int | None = None,
) -> list[int]:
    """Check every setting of :func:`run_decompose` against ``model`` and its training
    split before any work (k1 <= m, the feature width, read from the final layer with one
    probe image); returns the k values of the sweep (default :data:`SWEEP_K` up to m)."""
    InfluentialFeatures(k1=k1, k2=k2, coverage=coverage, by=by)._check_params()
    _positive("seeds", seeds)
    _positive("retrain_epochs", retrain_epochs, zero=True)
    _positive("map_images", map_images, zero=True)
    if batch_size is not None:
        _positive("batch_size", batch_size)
    probe, _ = train.tensors([0])
    probe = probe.to(model_device(model))
    _name, head = locate_head(model, probe)
    m = int(head.in_features)
    for name, k in (("k1", k1), ("k2", k2)):
        if isinstance(k, int) and k > m:
            raise InputError(f"{name} must be <= the feature width m={m} of this model, got {k}")
    if sweep_k is None:
        return [k for k in SWEEP_K if k <= m]
    ks = list(sweep_k)
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= m]
    if bad or not ks:
        raise InputError(f"sweep k values must lie in [1, m={m}]; got {bad or ks}")
    return ks


def run_decompose(
    model: nn.Module,
    *,
    data: str,
    out: str | Path,
    k1: int | str = 5,
    k2: int = 5,
    by: str = "label",
    coverage: float = 0.9,
    sweep_k: Sequence[int] | None = None,
    seeds: int = 3,
    retrain_epochs: int = 0,
    retrain_whole: bool = False,
    map_images: int = 8,
    batch_size: int | None = None,
) -> dict:
    """Run the paper-002 analysis of ``model`` on data set ``data``; write results to ``out``.

    ``k1="coverage"`` picks the smallest k1 holding ``coverage`` of an image's l1 mass
    (:class:`InfluentialFeatures`). ``sweep_k``: the k values of the k1/k2 sweep (default
    :data:`SWEEP_K` up to the feature width). Every input (settings, model/data fit,
    ``out`` writable) is checked before the first file is written (:func:`check_decompose`).
    Returns the summary written to ``out/summary.json``.
    """
    out = check_writable_folder(out)
    t0 = time.perf_counter()
    est = InfluentialFeatures(k1=k1, k2=k2, coverage=coverage, by=by)
    est._check_params()
    # read as the model's card says (input size, mean/std; classes matched by name)
    train = model_data(model, data, "train")
    test = model_data(model, data, "test")
    ks = check_decompose(
        model,
        train,
        k1=k1,
        k2=k2,
        by=by,
        sweep_k=sweep_k,
        seeds=seeds,
        retrain_epochs=retrain_epochs,
        coverage=coverage,
        map_images=map_images,
        batch_size=batch_size,
    )
    train_feats = collect_features(model, train, batch_size=batch_size, desc="features (train)")
    test_feats = collect_features(model, test, batch_size=batch_size, desc="features (test)")
    est.fit(model, train, features=train_feats)
    write_json(out / "influential.json", est.to_dict())
    rel = relative_accuracy(model, est, test_feats)
    log_line(f"decompose: A_f {rel['A_f']:.4f} A_d {rel['A_d']:.4f} r_A {rel['r_A']:.4f}")

    rows = sweep(model, train_feats, test_feats, k1s=ks, by=by, n_classes=train.num_classes)
    _rows_out(out, "sweep", rows)
    k1s, k2s, grid = sweep_grid(rows)
    plots.save_png(
        plots.sweep_heatmap(k1s, k2s, grid, title=f"r_A on {data} (A_f = {rel['A_f']:.3f})"),
        out / "sweep.png",
    )
    plots.save_png(
        plots.histogram_plot(est.histograms_, train.classes, est.indices_), out / "histograms.png"
    )

    ablation = noise_ablation(model, est, test_feats, seeds=range(seeds))
    _rows_out(out, "ablation", ablation_rows(ablation))

    overlap = jaccard_matrix(est)
    overlap_rows = [
        {"class": a, **{b: float(overlap[i, j]) for j, b in enumerate(train.classes)}}
        for i, a in enumerate(train.classes)
    ]
    _rows_out(out, "overlap", overlap_rows)
    plots.save_png(plots.overlap_plot(overlap, train.classes), out / "overlap.png")

    energy = (
        energy_table(model, est, test, batch_size=batch_size) if test.masks is not None else None
    )
    shown = torch.arange(min(map_images, len(test)))
    maps = influential_maps(model, est, test, indices=shown, batch_size=batch_size)
    titles = [train.classes[int(c)] for c in test.labels[shown]]
    plots.save_png(plots.maps_grid(test.raw_batch(shown), maps, titles), out / "maps.png")

    history = None
    if retrain_epochs:
        net, history = retrain(model, est, train, test, epochs=retrain_epochs, whole=retrain_whole)
        _rows_out(out, "retrain", history)
        meta = getattr(model, "meta", None) or {}
        save_decomposed(
            net,
            out / "retrained",
            est.head_name_,
            classes=train.classes,
            mean=meta.get("mean", train.mean),
            std=meta.get("std", train.std),
            input_shape=train.image_shape,
            extra={
                "k1": est.k1_,
                "k2": k2,
                "retrain_epochs": retrain_epochs,
                "whole": retrain_whole,
            },
        )
        label = "whole network" if retrain_whole else "decomposed head"
        plots.save_png(plots.retrain_plot({label: history}), out / "retrain.png")

    summary = {
        "data": data,
        "relative": rel,
        "k1": est.k1_,
        "k1_mode": "coverage" if k1 == "coverage" else "fixed",
        "coverage": est.coverage_.tolist(),
        "mean_coverage": float(est.coverage_.mean()),
        "ablation": ablation["overall"],
        "in_mask_energy": energy,
        "mean_overlap": mean_overlap(overlap),
        "retrain": history,
        "seconds": time.perf_counter() - t0,
    }
    write_json(out / "summary.json", summary)
    return summary

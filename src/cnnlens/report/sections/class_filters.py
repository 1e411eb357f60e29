"""Report section "Class-specific filters": paper 002's influential features of the model.

Fits :class:`~cnnlens.studies.decompose.InfluentialFeatures` (k1 = k2 = 5) on up to
2,000 training images and scores the decomposed final layer on up to 1,000
test images: r_A, a small k1/k2 sweep, the noise ablation, class overlap and
(where the data has masks) in-mask energy of the influential channels. No
retraining and no depth study here (``cnnlens decompose`` /
``decompose-depth`` do those), so the section stays fast.
"""

from __future__ import annotations

import html

import torch

from .. import ReportContext, section, table_html
from ..figures import figure_html

FIT_IMAGES = 1000
TEST_IMAGES = 500
MAP_IMAGES = 6


@section("class-filters", "Class-specific filters", order=60)
def class_filters(ctx: ReportContext) -> str | None:
    from ...analysis import collect_features
    from ...studies.decompose import (
        InfluentialFeatures,
        energy_table,
        influential_maps,
        jaccard_matrix,
        mean_overlap,
        noise_ablation,
        plots,
        relative_accuracy,
        sweep,
        sweep_grid,
    )

    if ctx.train is None:
        return None
    quick = bool(ctx.options.get("quick"))
    train = ctx.train.subset(range(min(len(ctx.train), 500 if quick else FIT_IMAGES)))
    test = ctx.test.subset(range(min(len(ctx.test), 300 if quick else TEST_IMAGES)))
    train_feats = collect_features(ctx.model, train)
    test_feats = collect_features(ctx.model, test)
    m = int(train_feats.features.shape[1])
    k = min(5, m)
    est = InfluentialFeatures(k1=k, k2=k).fit(ctx.model, train, features=train_feats)
    rel = relative_accuracy(ctx.model, est, test_feats)
    ks = [v for v in (1, 2, 3, 5, 8, 10) if v <= m]
    rows = sweep(ctx.model, train_feats, test_feats, k1s=ks, n_classes=train.num_classes)
    k1s, k2s, grid = sweep_grid(rows)
    ablation = noise_ablation(ctx.model, est, test_feats, seeds=(0, 1, 2))["overall"]
    overlap = mean_overlap(jaccard_matrix(est))
    classes = train.classes

    parts = [
        "<p><i>Decomposing the Deep: Finding Class Specific Filters in Deep CNNs</i> "
        "(Badola et al., Algorithm 1): for each training image the "
        f"{k} largest of the {m} penultimate features; per class the {k} features most often "
        "among them are its <b>influential features</b>. The <b>decomposed final layer</b> "
        "lets each class read only its own influential features "
        f"({rel['macs_full']} &rarr; {rel['macs_decomposed']} multiply-adds). "
        f"Fitted on {len(train)} training images, scored on {len(test)} test images.</p>",
        table_html(
            [
                {
                    "k1 = k2": k,
                    "A_f (full)": rel["A_f"],
                    "A_d (decomposed)": rel["A_d"],
                    "r_A = A_d / A_f": rel["r_A"],
                    "mean coverage": float(est.coverage_.mean()),
                    "mean class overlap (Jaccard)": overlap,
                }
            ]
        ),
        table_html(
            [
                {
                    "class": c,
                    "influential features": ", ".join(map(str, est.indices_[i].tolist())),
                    "coverage": float(est.coverage_[i]),
                }
                for i, c in enumerate(classes)
            ]
        ),
        "<p><b>Noise ablation</b> (Badola et al., Table 8): each image's influential features, or "
        "as many random other features, replaced by N(0,1) noise after pooling; accuracy of "
        "the original final layer, mean &plusmn; std over 3 seeds.</p>",
        table_html(
            [
                {
                    "original": ablation["original"],
                    "influential replaced": f"{ablation['influential_mean']:.4f} ± "
                    f"{ablation['influential_std']:.4f}",
                    "non-influential replaced": f"{ablation['non_influential_mean']:.4f} ± "
                    f"{ablation['non_influential_std']:.4f}",
                }
            ]
        ),
        figure_html(plots.sweep_heatmap(k1s, k2s, grid, title="r_A over k1, k2"), "r_A sweep"),
        figure_html(plots.histogram_plot(est.histograms_, classes, est.indices_), "histograms"),
    ]
    if test.masks is not None:
        energy = energy_table(ctx.model, est, test.subset(range(min(len(test), 500))))
        parts.append(
            "<p><b>Where the channels look</b> (Badola et al., Table 7): share of the mean "
            "activation map's positive energy inside the object mask at the last conv layer "
            f"(chance = mask area {energy['mask_area']:.3f}).</p>"
        )
        parts.append(
            table_html(
                [
                    {
                        "influential channels": energy["influential"],
                        "non-influential channels": energy["non_influential"],
                        "all channels": energy["all"],
                    }
                ]
            )
        )
    shown = torch.arange(min(MAP_IMAGES, len(test)))
    maps = influential_maps(ctx.model, est, test, indices=shown)
    titles = [html.escape(classes[int(c)]) for c in test.labels[shown]]
    parts.append(figure_html(plots.maps_grid(test.raw_batch(shown), maps, titles), "maps"))
    return "\n".join(parts)

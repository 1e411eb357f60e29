"""Report section "Channel roles and pruning": the human-predictable attribute network of
paper 003 (Kimura & Tanaka 2020) trained on the data set's attributes.

Shown when the run trained one (``ReportContext.options["attributes_run"]``: its run folder,
written by :func:`cnnlens.studies.channel_roles.training.attribute_run`; the demo trains it
once and reuses it). The section reads the network: accuracy per attribute; the attribute x
channel grid of mean mask values (Fig. 5); each attribute's top-3 channels' masks on two
test images (Fig. 4); the five most correlated attributes per attribute by their mask
vectors, beside the correlation of the labels (Table 4); the channel correlation matrix
(Fig. 6); and semantic channel pruning against random and lowest-L1 pruning (Fig. 7); mean
accuracy under input noise for each attention-mask transformation (Fig. 8). The measurements
are cached in ``<run>/report-cache.json`` (keyed by the run and the settings), so a second
report only draws.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import ReportContext, section, table_html
from ..figures import figure_html

FULL = {
    "n_roles": 1000,
    "n_eval": 300,
    "seeds": 3,
    "fractions": [0.25, 0.5, 0.75],
    "noise_stds": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
}
QUICK = {
    "n_roles": 128,
    "n_eval": 64,
    "seeds": 2,
    "fractions": [0.5],
    "noise_stds": [0.0, 0.25, 0.5],
}
CACHE = "report-cache.json"


def cached_measure(run, folder: Path, settings: dict) -> dict:
    from ...runs import measured
    from ...studies.channel_roles.study import roles_and_pruning

    key = {"identity": run.identity, "settings": settings}
    return measured(folder / CACHE, key, lambda: roles_and_pruning(run, settings))


def _markdown_table(text: str) -> list[dict]:
    lines = [ln.strip().strip("|").split("|") for ln in text.splitlines() if ln.strip()]
    head = [c.strip() for c in lines[0]]
    return [dict(zip(head, (c.strip() for c in row), strict=True)) for row in lines[2:]]


@section("attributes", "Channel roles and pruning", order=80)
def attributes_section(ctx: ReportContext) -> str | None:
    folder = ctx.options.get("attributes_run")
    if folder is None:
        return None
    import torch

    from ...studies.channel_roles.reading import channel_masks
    from ...studies.channel_roles.runs import open_run
    from ...studies.channel_roles.study import construction_check
    from ..attribute_figures import (
        channel_correlation_plot,
        mask_grid_plot,
        pruning_plot,
        robustness_plot,
        top_mask_grid,
    )

    quick = bool(ctx.options.get("quick"))
    run = open_run(folder)
    settings = QUICK if quick else FULL
    result = cached_measure(run, Path(folder), settings)
    roles = result["roles"]
    names = roles["attribute_names"]
    mask_means = np.asarray(roles["mask_means"])
    top = torch.tensor(roles["top_channels"])
    x, _ = run.test.tensors(range(2))
    masks = torch.stack([channel_masks(run.model, x, k, top[k]) for k in range(len(names))])
    images = run.test.denormalize(x)
    c = run.model.feature_channels
    accuracy = {"mean": run.mean_accuracy, **run.accuracy}
    check = construction_check(names, roles["attribute_correlation"])
    curves = result["curves"]
    parts = [
        "<p>The multi-attribute network of Kimura &amp; Tanaka (2020, paper 003): a dilated "
        f"extractor that never downsamples ({' / '.join(map(str, run.model.channels))} channels), "
        f"then for each of the {len(names)} attributes its own attention mask over the "
        f"{c} feature channels and pixels, a masked global average pool and a linear output. "
        f"Trained on {len(run.train)} {run.identity.get('size')}x{run.identity.get('size')} "
        f"images of {html_name(run.identity.get('data'))}; test accuracy on {len(run.test)} "
        "images:</p>",
        table_html([accuracy], floatfmt="{:.3f}"),
        "<h3>Which channels each attribute uses</h3>",
        "<p>Mean value of each attribute's mask on each channel (Fig. 5 of the paper; "
        f"{roles['n_images']} training images). The L1 penalty on the masks makes each "
        "attribute keep few channels.</p>",
        figure_html(mask_grid_plot(mask_means, names), "mean mask per attribute and channel"),
        "<p>Each attribute's three channels of largest mean mask: the masks on two test "
        "images (bright = used).</p>",
        figure_html(top_mask_grid(images, masks, names, top), "top channels' masks"),
        "<h3>Attributes that use the same channels</h3>",
        "<p>Correlation of the attributes' mask vectors (rows of the grid above; Table 4 of "
        "the paper), with the correlation of the labels themselves after the slash.</p>",
        table_html(_markdown_table(result["correlation_table"])),
    ]
    if check is not None:
        parts.append(
            "<p><code>shapes</code> builds some correlations in (red, green, blue exclusive; "
            "red implies warm, green and blue imply not warm; striped implies filled) and draws "
            "large, left, top, filled and bright independently. Mean |rho| of the mask vectors: "
            f"{check['mean_abs_correlated']:.3f} over the pairs correlated by construction, "
            f"{check['mean_abs_independent']:.3f} over the independent pairs (one-sided "
            f"Mann-Whitney U: p = {check['p_larger']:.2g} that the first are larger). A mask "
            "correlation says two attributes read the same channels, so exclusive attributes "
            "(red, green) correlate positively too.</p>"
        )
    parts += [
        "<h3>Channels with the same role, and pruning them</h3>",
        "<p>Correlation of the global-average-pooled channels over the training images (Fig. "
        "6). Semantic pruning visits the pairs by descending |rho| and removes, for all "
        "attributes, the channel of the pair whose filter has the lower L1 norm; random "
        f"pruning ({len(curves['random']['per_order'])} seeds, band = min to max) and "
        "lowest-L1 pruning are the baselines (Fig. 7). Pruned networks are really smaller "
        "(the last conv and every mask conv lose the channels).</p>",
        figure_html(
            channel_correlation_plot(np.asarray(result["channel_correlation"])),
            "channel correlation",
        ),
        figure_html(pruning_plot(curves, c), "pruning curves"),
        table_html(
            [
                {
                    "order": name,
                    **{
                        f"{m} pruned": f"{100 * a:.1f}"
                        for m, a in zip(curve["counts"], curve["mean_accuracy"], strict=True)
                    },
                }
                for name, curve in curves.items()
            ]
        ),
        "<h3>Robustness to input noise, per mask transformation</h3>",
        f"<p>Mean attribute accuracy on {min(settings['n_eval'], len(run.test))} test "
        "images with Gaussian noise added to the input (std as a share of the [0, 1] "
        "range, one draw per image scaled to each level), for each transformation "
        "g(M; n, &beta;) of the attention masks (Fig. 8 of the paper; n = 1, &beta; = 0 "
        "is the network as trained).</p>",
        figure_html(robustness_plot(result["robustness"]), "accuracy under input noise"),
        "<p><code>cnnlens attributes prune|robustness|predictability --run RUN</code> "
        "runs the full sweeps, the noise robustness of the mask transformation and the "
        "measured predictability score.</p>",
    ]
    return "\n".join(parts)


def html_name(text) -> str:
    import html

    return f"<code>{html.escape(str(text))}</code>"

"""Report section "Re-label distillation" (paper 004): the VAE, a small evaluation, maps.

Options: ``relabel_images``, ``relabel_samples``. Needs the run's VAE in
``ctx.options["vae"]`` (the demo trains it once into ``<run>/vae-<data>`` and
reuses it; ``ctx.options["vae_run"]`` may hold the
:class:`~cnnlens.studies.relabel.TrainedVAE` for its facts); without one the section
says how to get one. Kept cheap: deletion / insertion with 64-pixel steps and
the pointing game on :data:`IMAGES` test images (3 with 100 samples each
and at most 3 scales tried in quick mode) for relabel, Grad-CAM and occlusion
next to the random baseline; and paper 004's Fig. 3, the t-SNE of the relabelled samples
of the first test image (:data:`TSNE_SAMPLES`, :data:`QUICK_TSNE_SAMPLES` in quick mode:
t-SNE is quadratic in them). ``benchmarks/relabel.py`` runs the full comparison.
"""

from __future__ import annotations

import time

import torch

from ...placement import model_device
from .. import ReportContext, section, table_html
from ..figures import figure_html, labelled_scatter

IMAGES = 24
QUICK_IMAGES = 3
QUICK_SAMPLES = 100
QUICK_SEARCH = {"probe": 50, "max_tries": 3}  # at most 250 network passes per image
SHOWN = 6
OTHERS = ("grad-cam", "occlusion")
TSNE_SAMPLES = 500
QUICK_TSNE_SAMPLES = 150
STEP = 64  # pixels per deletion / insertion step (the protocol's 9 at 32x32: cnnlens evaluate)


@section("relabel", "Re-label distillation", order=65)
def relabel(ctx: ReportContext) -> str | None:
    from ...attribution import explain
    from ...hooks import frozen
    from ...metrics import deletion, insertion, pointing_game
    from ...metrics.baselines import random_map
    from ...metrics.result import ci95
    from ...studies.relabel import reconstruction_quality
    from .explanations import explanation_grid

    vae = ctx.options.get("vae")
    if vae is None:
        return (
            "<p>Re-label distillation needs a VAE trained on the model's data; this run has "
            "none. <code>cnnlens train-vae --data &lt;data&gt; --out &lt;run&gt;/vae-&lt;data&gt;"
            "</code> trains one where <code>cnnlens explain --methods relabel</code> finds it."
            "</p>"
        )
    quick = bool(ctx.options.get("quick"))
    n = int(ctx.options.get("relabel_images", QUICK_IMAGES if quick else IMAGES))
    n = min(n, len(ctx.test))
    samples = int(ctx.options.get("relabel_samples", QUICK_SAMPLES if quick else 1000))
    device = model_device(ctx.model)
    x, _ = ctx.test.tensors(range(n))
    x = x.to(device)
    pred = ctx.logits()[:n].argmax(1).to(device)
    run = ctx.options.get("vae_run")
    quality = getattr(run, "quality", None) or reconstruction_quality(vae, ctx.test, n=200)
    with torch.no_grad(), frozen(ctx.model), frozen(vae):
        kept = (ctx.model(vae(x)).argmax(1) == pred).float().mean().item()
    facts = {
        "latent": getattr(vae, "latent", "?"),
        "reconstruction MSE (normalised)": float(quality["mse"]),
        "PSNR (dB)": float(quality["psnr_db"]),
        f"top-1 kept on reconstructions ({n} images)": kept,
    }
    if run is not None:
        facts["training"] = "reused" if run.reused else f"{run.seconds:.0f} s"
    t0 = time.perf_counter()
    search = QUICK_SEARCH if quick else {}
    e = explain(ctx.model, x, "relabel", target=pred, vae=vae, n=samples, **search)
    per_image = (time.perf_counter() - t0) / n
    share = e.extras["share"]
    facts["share of y'=1 (mean)"] = float(share.mean())
    facts["images with share in [0.1, 0.9]"] = f"{int(((share >= 0.1) & (share <= 0.9)).sum())}/{n}"
    facts["s per explanation"] = per_image
    maps = {"relabel": e.maps}
    for name in OTHERS:
        maps[name] = explain(ctx.model, x, name, target=pred).maps
    maps["random"] = random_map(x, seed=0)
    masks = None if ctx.test.masks is None else ctx.test.masks[:n].to(device)
    rows = []
    for name, m in maps.items():
        row = {"method": name}
        for metric, fn in (("deletion ↓", deletion), ("insertion ↑", insertion)):
            r = fn(ctx.model, x, m, target=pred, step=STEP)
            row[metric] = f"{r.mean:.3f} ± {ci95(r.values):.3f}"
        if masks is not None:
            r = pointing_game(None, None, m, masks=masks)
            row["pointing game ↑"] = f"{r.mean:.3f} ± {ci95(r.values):.3f}"
        rows.append(row)
    shown = min(SHOWN, n)
    maps = {k: v[:shown].cpu() for k, v in maps.items() if k != "random"}
    classes = ctx.test.classes
    titles = [f"{classes[int(p)]} y'={float(s):.2f}" for p, s in zip(pred[:shown], share)]
    grid = explanation_grid(ctx.test.raw_batch(range(shown)), maps, titles)
    tsne = _tsne_figure(ctx, vae, x[:1], int(pred[0]), quick, search)
    return "".join(
        [
            "<p>Re-label distillation (paper 004): a convolutional VAE trained on the data "
            "encodes each image; "
            f"{samples} latents <code>mu + scale * eps * sigma</code> are decoded, the network "
            "labels each synthetic image 1 if its top-1 stays the image's class and 0 otherwise "
            "(Eq. 6; <code>scale</code> is searched until both labels are present, share of 1 "
            "in [0.1, 0.9]), and a linear student trained on them (Eq. 7) gives the map "
            "<code>|sum_c (w_1 - w_0)|</code>. The VAE and the share of 1s:</p>",
            table_html([facts], floatfmt="{:.3f}"),
            f"<p>Deletion and insertion (64-pixel steps) and the pointing game on {n} test "
            "images, mean ± 95 % confidence half width; the full comparison with LIME, RISE "
            "and extremal perturbation is <code>benchmarks/relabel.py</code>.</p>",
            table_html(rows),
            figure_html(grid, "relabel, Grad-CAM and occlusion maps"),
            tsne,
        ]
    )


def _tsne_figure(ctx: ReportContext, vae, image, target: int, quick: bool, search: dict) -> str:
    """Paper 004's Fig. 3: the relabelled samples of one image in the network's feature space."""
    from ...studies.relabel.distiller import relabelled_embedding

    n = int(ctx.options.get("relabel_tsne_samples", QUICK_TSNE_SAMPLES if quick else TSNE_SAMPLES))
    xy, hard, scale = relabelled_embedding(ctx.model, vae, image, target=target, n=n, **search)
    name = ctx.test.classes[target]
    fig = labelled_scatter(
        xy,
        hard.tolist(),
        {1: f"y'=1 (still {name})", 0: "y'=0 (changed)"},
        title=f"{n} VAE samples of test image 0, scale {scale:.3g}",
    )
    return "".join(
        [
            "<h3>The relabelled samples in the network's feature space</h3>",
            f"<p>Fig. 3 of the paper: t-SNE (scikit-learn, PCA start, seed 0) of the network's "
            f"penultimate features of {n} synthetic images of test image 0 ({name}), coloured "
            "by their label y' (the paper shows the two labels in separate regions).</p>",
            figure_html(fig, "t-SNE of the relabelled samples"),
        ]
    )


__all__ = ["relabel"]

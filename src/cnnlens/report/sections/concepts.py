"""Report section "Concepts": what the model uses, not only where (Concept Relevance
Propagation, Achtibat et al. 2023).

At the last spatial stage of the model (:func:`cnnlens.layers.auto_layer`): for one test
image, the LRP map of its prediction split into the conditional maps of its most relevant
channels (:func:`~cnnlens.analysis.conditional_relevance`); for the channels that carry the
most relevance over the test images, their reference images by relevance beside those by
activation (:class:`~cnnlens.analysis.ReferenceImages`, one streaming pass), with the
channel's conditional heatmaps and its best network-dissection concept where the data has
masks, and, where the report has concept sets (the user's concept folders, or the data's
attributes such as ``shapes``' red, striped, filled), the TCAV concept each shown channel
is linked to by CAV cosine (:func:`~cnnlens.analysis.tcav_links`) with its TCAV score.
A model LRP has no rules for gets a line saying so. ``cnnlens inspect concepts``
runs the same at any size and keeps the pass in a resumable store.
"""

from __future__ import annotations

import html

import torch

from ...errors import LayerError
from ...placement import model_device
from .. import ReportContext, section, table_html
from ..figures import figure_html

IMAGES = 500  # test images streamed for the reference images at 32 px (quick: 64)
CHANNELS = 4  # channels shown with their reference images
SPLIT = 4  # channels an image's LRP map is split into
LINK_RUNS = 4  # random sets of the TCAV fitted here for the links (quick: 2)
LINK_IMAGES = 30  # images per concept and random set of that TCAV (quick: 16)
LINK_SCORED = 200  # test images its scores are measured on (quick: 64)


def _concept_sets(ctx: ReportContext, quick: bool, size: int):
    """The report's concept sets and the images their random sets come from: the user's
    concept folders (``options["concepts"]``), else the data's attributes, else None."""
    from ...analysis import shapes_concepts

    if ctx.options.get("concepts"):
        random = ctx.options.get("concept_random")
        return ctx.options["concepts"], ctx.test if random is None else random
    if ctx.val is not None and ctx.val.attribute_names:
        names = ctx.val.attribute_names[:3] if quick else ctx.val.attribute_names
        return shapes_concepts(ctx.val, list(names), n=size), ctx.val
    return None


def tcav_at(ctx: ReportContext, layer: str, quick: bool):
    """``(fitted TCAV, its result, reused)`` at ``layer`` for the report's concept sets:
    the Model internals section's (``ctx.cache["tcav"]``) when it is at ``layer``, else
    a small one fitted here (``LINK_RUNS`` random sets); None without concept sets."""
    from ...analysis import TCAV

    cached = ctx.cache.get("tcav")
    if cached is not None and cached[0].layer_ == layer:
        return (*cached, True)
    size = 16 if quick else LINK_IMAGES
    found = _concept_sets(ctx, quick, size)
    if found is None:
        return None
    sets, random = found
    size = min(size, *(len(c) for c in sets.values()))
    runs = max(2, min(2 if quick else LINK_RUNS, len(random) // size))
    fitted = TCAV(layer, n_random=runs, random_size=size).fit(ctx.model, sets, random=random)
    result = fitted.score(ctx.model, _first(ctx.test, 64 if quick else LINK_SCORED))
    return fitted, result, False


def channel_links(ctx: ReportContext, layer: str, channels: list[int], count: int, quick: bool):
    """``{channel: link}`` (:func:`~cnnlens.analysis.tcav_links`) of ``channels`` (of
    ``count``) to the report's TCAV concepts at ``layer``, and a sentence on how; None
    without concept sets."""
    from ...analysis import tcav_links

    found = tcav_at(ctx, layer, quick)
    if found is None:
        return None
    fitted, result, reused = found
    directions = torch.eye(count)[channels]
    links = tcav_links(fitted, result, directions, [f"#{c}" for c in channels])
    runs = len(fitted.cavs_[fitted.concepts_[0]])
    how = (
        "the CAVs of the Model internals section, fitted at this layer"
        if reused
        else f"CAVs fitted here, {runs} random sets of {fitted.random_size_} images"
    )
    text = (
        f"<p>Named by TCAV: each channel is linked to the concept "
        f"({html.escape(', '.join(fitted.concepts_))}) whose concept activation vectors "
        "point most along it (mean cosine of the channel, at every position, with the "
        f"concept's CAVs; {how}), with that concept's highest TCAV score over the classes "
        "(a star: significant). A cosine near 0 means no concept given aligns with the "
        "channel; the link then names the least bad one.</p>"
    )
    return dict(zip(channels, links, strict=True)), text


def _link_cells(link: dict) -> dict:
    cls, best = max(link["tcav"].items(), key=lambda kv: kv[1]["score"])
    star = "*" if best["significant"] else ""
    return {
        "TCAV concept (cosine)": f"{link['concept']} ({link['cosine']:.2f})",
        "its top TCAV score": f"{best['score']:.2f}{star} ({cls})",
    }


def _first(data, n: int):
    return data.subset(range(min(n, len(data))))


def _split_figure(image, lrp_map, maps, channels, layer, names):
    """One row: the image, its LRP map, then its conditional maps of ``channels``."""
    from ...plotting import as_hwc
    from ..concepts_figures import LABEL_PX, heat_overlay
    from ..figures import CellGrid, title_px

    titles = ["image", "LRP", *[f"#{c}" + (f"\n{names[c]}" if names else "") for c in channels]]
    grid = CellGrid(1, len(titles), left_px=LABEL_PX, title_px=title_px(titles))
    grid.label(0, f"{layer}\nconcepts")

    grid.image(0, 0, as_hwc(image), interpolation="nearest")
    for j, heat in enumerate([lrp_map, *maps]):
        grey, rgba = heat_overlay(image, heat)
        grid.image(0, j + 1, grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        grid.image(0, j + 1, rgba, interpolation="nearest")
    for j, t in enumerate(titles):
        grid.title(0, j, t)
    return grid.fig


@section("concepts", "Concepts", order=75)
def concepts(ctx: ReportContext) -> str | None:
    from ...analysis import ReferenceImages, conditional_relevance
    from ...analysis.concepts.relmax import channel_names, reference_heatmaps
    from ...attribution import get as get_method
    from ...layers import auto_layer
    from ..concepts_figures import fits, reference_figure

    quick = bool(ctx.options.get("quick"))
    h, w = ctx.test.image_shape[-2:]  # fewer images where each costs more (224 px: 32)
    test = _first(ctx.test, 64 if quick else max(32, min(IMAGES, IMAGES * 1024 // (h * w))))
    device = model_device(ctx.model)
    x, _ = test.tensors([0])
    x = x.to(device)
    layer = auto_layer(ctx.model, x)
    try:  # the whole way to the input: where LRP refuses, CRP does too
        lrp_map = get_method("lrp")(ctx.model)(x).maps[0, 0].cpu()
    except LayerError as err:
        return f"<p>Not shown: concept relevance needs LRP, and {html.escape(str(err))}</p>"
    at_layer = get_method("lrp")(ctx.model, at=layer)(x)
    top = fits()
    refs = ReferenceImages(layer, top=top).fit(ctx.model, test)
    names_full = channel_names(ctx.model, test, layer)
    names = {c: f"{n['concept']}\nIoU {n['iou']:.2f}" for c, n in (names_full or {}).items()}

    # one image: its prediction's relevance split by channel
    per_channel = at_layer.raw[0].flatten(1).sum(1)
    split = [int(c) for c in per_channel.argsort(descending=True)[:SPLIT]]
    maps = conditional_relevance(ctx.model, x, layer=layer, channels=split)[0].cpu()
    share = (per_channel[split].sum() / per_channel.sum()).item()
    image = test.raw_batch([0])[0]

    # reference images of the channels with the most relevance in their top images
    strongest = refs.value_["relevance"][:, 0].argsort(descending=True)[:CHANNELS]
    shown = [int(c) for c in strongest]
    heatmaps = reference_heatmaps(ctx.model, test, refs, shown)
    both = [
        len(set(refs.image_["relevance"][c].tolist()) & set(refs.image_["activation"][c].tolist()))
        for c in range(refs.channels_)
    ]
    overlap = sum(both) / (refs.channels_ * min(top, refs.seen_))
    linked = channel_links(ctx, layer, shown, refs.channels_, quick)
    rows = []
    for c in shown:
        row = {"channel": f"#{c}"}
        if names:
            row["dissection concept (IoU)"] = names[c].replace("\n", " ")
        row["top relevance"] = float(refs.value_["relevance"][c, 0])
        row["top activation"] = float(refs.value_["activation"][c, 0])
        row["images in both top sets"] = f"{both[c]} / {min(top, refs.seen_)}"
        if linked is not None:
            row |= _link_cells(linked[0][c])
        rows.append(row)
    naming = (
        "Under each channel, its best concept by network dissection on the same images "
        "(IoU of its thresholded activation with the concept's masks; see Model internals)."
        if names
        else "The data has no concept masks, so the channels are not named."
    )
    return "\n".join(
        [
            "<p>Attribution maps say <i>where</i> a network looks; Concept Relevance "
            "Propagation (Achtibat et al. 2023) says <i>what</i> it uses there. A concept is a "
            f"channel of <code>{html.escape(layer)}</code> (the last spatial stage). Its "
            "conditional heatmap is the LRP relevance (composite epsilon-plus) of the "
            "prediction restricted to what flows through that channel: the maps of all the "
            "stage's channels add up to the LRP map.</p>",
            f"<p>Test image 0, predicted class {int(at_layer.target[0])}: its LRP map and the "
            f"conditional maps of the {SPLIT} channels with the most relevance for that "
            f"prediction, which carry {100 * share:.0f} % of it (each map on its own "
            "scale; red: for the class, blue: against).</p>",
            figure_html(
                _split_figure(image, lrp_map, maps, split, layer, names),
                "an image's LRP map split into concepts",
            ),
            f"<p>Reference images from {refs.seen_} test images, in one streaming pass: left, "
            "the images where the channel carries the most relevance for the predicted class "
            "(relevance maximisation), with the channel's conditional heatmap; right, those "
            "where it fires most (activation maximisation). Yellow boxes: the receptive field "
            "of the channel's maximum. The two rankings differ: over all "
            f"{refs.channels_} channels, {100 * overlap:.0f} % of the top-{min(top, refs.seen_)} "
            f"images are in both. {naming}</p>",
            figure_html(
                reference_figure(refs, test, shown, heatmaps, names=names or None),
                "reference images by relevance and by activation",
            ),
            "" if linked is None else linked[1],
            table_html(rows, floatfmt="{:.3g}"),
        ]
    )

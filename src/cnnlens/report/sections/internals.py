"""Report section "Model internals": the survey's tools for the model itself (paper 001).

Layer similarity (linear CKA, minibatch estimator) between every pair of
blocks of the model, and between the model and the same architecture trained
with another seed when the run has one (``ReportContext.other_seeds``); a
decision-tree surrogate of the network's predictions with its fidelity; TCAV
scores of the data set's attributes and classes as concepts; network dissection
of every block against the object masks, classes and attributes (when the test
set has object masks); activation maximisation of every class logit and of the
channels each class weighs most. Each part runs on a few hundred to a thousand
images (the optimised images: a few dozen) so the section stays within the
demo's time budget; ``cnnlens inspect ...`` runs the same analyses at any size.
"""

from __future__ import annotations

import html

from ...placement import model_device
from .. import ReportContext, section, table_html
from ..figures import figure_html

SIMILARITY_IMAGES = 1000
TREE_TRAIN_IMAGES = 2000
TREE_TEST_IMAGES = 1000
TREE_DEPTH = 4
TCAV_RANDOM_SETS = 20  # the calibrated test has R - 1 degrees of freedom
TCAV_CONCEPT_IMAGES = 50
TCAV_CLASS_IMAGES = 1000
DISSECTION_IMAGES = 1000
DISSECTION_UNITS = 6  # channels in the top-images figure
# activation maximisation: Fourier images, two seeds, every class and one channel per class
MAXIMISE_STEPS = 128
MAXIMISE_SEEDS = (0, 1)
MAXIMISE_OPTIONS = {"parameterisation": "fourier", "tv": 1.0, "scale": (0.9, 1.1)}


def _first(data, n: int):
    return data.subset(range(min(n, len(data))))


def similarity_part(ctx: ReportContext, quick: bool) -> str:
    from ...analysis import layer_similarity
    from ..similarity_heatmap import similarity_heatmap

    test = _first(ctx.test, 256 if quick else SIMILARITY_IMAGES)
    within = layer_similarity(ctx.model, test)
    parts = [
        "<h3>Layer similarity</h3>",
        "<p>Linear CKA (Kornblith et al. 2019) between the outputs of every pair of blocks, "
        f"on {within.n} test images, with the unbiased minibatch estimator of Nguyen et al. "
        "(2021; minibatches of 256). 1 means the two layers' representations are the same "
        "up to rotation and scale; the survey (paper 001, section 3.2) uses such comparisons "
        "to see where a network's hierarchy forms.</p>",
        figure_html(similarity_heatmap(within), "CKA between layers"),
    ]
    for seed, other in ctx.other_seeds.items():
        across = layer_similarity(ctx.model, test, other=other)
        parts.append(
            f"<p>The same architecture trained on the same data with seed {html.escape(seed)}: "
            "rows are this model's layers, columns the other model's. The diagonal compares "
            "each layer with its counterpart.</p>"
        )
        parts.append(figure_html(similarity_heatmap(across), f"CKA against seed {seed}"))
        if across.rows == across.columns:
            diagonal = across.matrix.diagonal().tolist()
            parts.append(
                table_html([dict(zip(["", *across.rows], ["CKA", *diagonal]))], floatfmt="{:.3f}")
            )
    return "\n".join(parts)


def surrogate_part(ctx: ReportContext, quick: bool) -> str:
    from ...analysis import SurrogateTree

    train = _first(ctx.train, 500 if quick else TREE_TRAIN_IMAGES)
    test = _first(ctx.test, 300 if quick else TREE_TEST_IMAGES)
    tree = SurrogateTree(max_depth=TREE_DEPTH).fit(ctx.model, train)
    fidelity = tree.score(ctx.model, test)
    return "\n".join(
        [
            "<h3>Surrogate decision tree</h3>",
            "<p>A decision tree of depth at most "
            f"{TREE_DEPTH} learns the network's predicted class from its penultimate features "
            f"({len(train)} training images; Craven &amp; Shavlik 1996, the survey's "
            "section 3.4). Fidelity is the share of images on which tree and network agree.</p>",
            table_html(
                [
                    {
                        "depth": tree.depth_,
                        "leaves": tree.n_leaves_,
                        "fidelity (train)": tree.train_fidelity_,
                        f"fidelity ({len(test)} test images)": fidelity,
                    }
                ]
            ),
            f"<pre>{html.escape(tree.rules_)}</pre>",
        ]
    )


def tcav_part(ctx: ReportContext, quick: bool) -> str | None:
    from ...analysis import TCAV, shapes_concepts
    from ..tcav_heatmap import tcav_heatmap

    if ctx.val is None or not ctx.val.attribute_names:
        return None
    names = [*ctx.val.attribute_names, *(f"class={c}" for c in ctx.val.classes)]
    if quick:
        names = [*ctx.val.attribute_names[:3], f"class={ctx.val.classes[0]}"]
    runs = 4 if quick else TCAV_RANDOM_SETS
    size = 30 if quick else TCAV_CONCEPT_IMAGES
    concepts = shapes_concepts(ctx.val, names, n=size)
    fitted = TCAV("mid", n_random=runs, random_size=size)
    fitted.fit(ctx.model, concepts, random=ctx.val)
    result = fitted.score(ctx.model, _first(ctx.test, 200 if quick else TCAV_CLASS_IMAGES))
    ctx.cache["tcav"] = (fitted, result)  # the Concepts section links channels to it
    significant = result.significant
    attributes = [i for i, c in enumerate(result.concepts) if not c.startswith("class=")]
    own = [
        (i, result.class_names.index(c.removeprefix("class=")))
        for i, c in enumerate(result.concepts)
        if c.removeprefix("class=") in result.class_names and c.startswith("class=")
    ]
    counts = {
        "attribute x class pairs significant": (
            f"{int(significant[attributes].sum())} / {len(attributes) * len(result.classes)}"
        ),
    }
    if own:
        hits = sum(bool(significant[i, k]) and float(result.mean[i, k]) > 0.5 for i, k in own)
        mean = sum(float(result.mean[i, k]) for i, k in own) / len(own)
        counts["class concept, own class: significant and > 0.5"] = f"{hits} / {len(own)}"
        counts["class concept, own class: mean score"] = f"{mean:.3f}"
    return "\n".join(
        [
            "<h3>Concept vectors (TCAV)</h3>",
            f"<p>TCAV (Kim et al. 2018; the survey's section 3.2) at <code>{result.layer}</code>: "
            "a concept activation vector (logistic regression between the layer's activations "
            f"of {size} validation images showing the concept and {size} random ones) for each "
            f"concept and each of {runs} random sets; a class's score is the share of its test "
            "images whose logit grows along the vector. A star marks p &lt; "
            f"{result.alpha:g} in a two-sided t-test of the concept's mean score against "
            "the mean scores of the random sets taken as concepts (R - 1 degrees of freedom; "
            "Kim et al.'s own t-test treats a concept's runs as independent although they "
            "share its images, and so flags far more than 5 % of concepts made of random "
            "images). At this level about 5 % of the cells of a concept the model ignores "
            "carry a star by chance. In <code>shapes</code> the attributes are drawn "
            "independently of the class, while a class taken as a concept "
            "(<code>class=star</code>) must matter to its own class; a significant attribute "
            "says the logit is sensitive to that direction (a larger star gives more star "
            "evidence), not that the two are correlated in the data.</p>",
            figure_html(tcav_heatmap(result), "TCAV scores of concepts by class"),
            table_html([counts]),
        ]
    )


def folder_tcav_part(ctx: ReportContext, quick: bool) -> str:
    """TCAV of the user's concept folders (``options["concepts"]``: name -> Concept, from
    :func:`~cnnlens.analysis.folder_concepts`) against random images
    (``options["concept_random"]``: a data set, else the test images)."""
    from ...analysis import TCAV
    from ..tcav_heatmap import tcav_heatmap

    concepts = ctx.options["concepts"]
    random = ctx.options.get("concept_random")
    random = ctx.test if random is None else random
    size = min(TCAV_CONCEPT_IMAGES, *(len(c) for c in concepts.values()))
    runs = max(2, min(4 if quick else TCAV_RANDOM_SETS, len(random) // size))
    fitted = TCAV("mid", n_random=runs, random_size=size).fit(ctx.model, concepts, random=random)
    result = fitted.score(ctx.model, _first(ctx.test, 200 if quick else TCAV_CLASS_IMAGES))
    ctx.cache["tcav"] = (fitted, result)  # the Concepts section links channels to it
    where = "test images" if random is ctx.test else "random images given with the concepts"
    counts = {
        "concept x class pairs significant": (
            f"{int(result.significant.sum())} / {len(result.concepts) * len(result.classes)}"
        )
    }
    return "\n".join(
        [
            "<h3>Concept vectors (TCAV)</h3>",
            f"<p>TCAV (Kim et al. 2018; the survey's section 3.2) at <code>{result.layer}</code> "
            f"for the concept folders given ({html.escape(', '.join(result.concepts))}): a "
            "concept activation vector (logistic regression between the layer's activations "
            f"of {size} images of the concept and {size} {where}) for each concept and each of "
            f"{runs} random sets; a class's score is the share of its test images whose logit "
            "grows along the vector. A star marks p &lt; "
            f"{result.alpha:g} in a two-sided t-test of the concept's mean score against the "
            "mean scores of the random sets taken as concepts (R - 1 degrees of freedom); "
            "about 5 % of the cells of a concept the model ignores carry a star by chance.</p>",
            figure_html(tcav_heatmap(result), "TCAV scores of concepts by class"),
            table_html([counts]),
        ]
    )


def dissection_part(ctx: ReportContext, quick: bool) -> str | None:
    from ...analysis import Dissection
    from ..dissection_figures import interpretability_chart, top_images_figure

    if ctx.test.masks is None:
        return None
    test = _first(ctx.test, 200 if quick else DISSECTION_IMAGES)
    result = Dissection(top_k=8).fit(ctx.model, test).result_
    rows = [
        {
            "layer": r["layer"],
            "interpretable": f"{r['interpretable']} / {r['channels']}",
            "share": f"{100 * r['share']:.1f} %",
            "detectors (concept: channels)": r["detectors"] or "-",
        }
        for r in result.summary()
    ]
    units = result.strongest(DISSECTION_UNITS)
    parts = [
        "<h3>Network dissection</h3>",
        "<p>Network dissection (Bau et al. 2017; the survey's section 3.2) on "
        f"{result.n_images} test images: each channel's activation map, upsampled to the image "
        f"and cut at the channel's top {100 * (1 - result.quantile):.2g} % activation over all "
        "images and positions, is compared with the mask of each concept by intersection over "
        "union summed over the images. Concepts: the object, the background, the object in "
        "the images of each class (<code>class=star</code>) and in the images with each "
        "attribute (<code>striped</code>, <code>red</code>, ...). A channel whose best IoU "
        f"exceeds {result.iou_threshold:g} is labelled a detector of that concept.</p>",
        figure_html(interpretability_chart(result), "interpretable channels per layer"),
        table_html(rows),
    ]
    if units:
        parts += [
            "<p>The strongest detectors (the best channel of each concept first): their "
            "top activating test images, the region above the channel's threshold outlined, "
            "the rest dimmed.</p>",
            figure_html(top_images_figure(result, test, units), "top images of detectors"),
        ]
    return "\n".join(parts)


def top_channels(model, layer: str, x, count: int) -> list[int]:
    """For each of the first ``count`` classes, the channel of ``layer`` with the largest
    weight into its logit (distinct channels), where the final linear layer reads the
    layer's pooled channels (a CIFAR ResNet's last block); else channels 0..count-1."""
    import torch

    from ...hooks import capture_outputs, frozen
    from ...layers import final_linear

    with frozen(model), capture_outputs(model, [layer]) as store, torch.no_grad():
        model(x[:1])
    channels = store[layer].shape[1]
    weight = final_linear(model, x[:1])[1].weight.detach()
    if weight.shape[1] != channels:
        return list(range(min(count, channels)))
    chosen: list[int] = []
    for row in weight[:count]:
        order = row.argsort(descending=True).tolist()
        chosen.append(next(c for c in order if c not in chosen))
    return chosen


def maximise_part(ctx: ReportContext, quick: bool) -> str:
    from ...analysis import Objective, maximise_all
    from ...layers import auto_layer
    from ..maximise_grid import maximise_grid

    test = ctx.test
    x, _ = test.tensors(range(1))
    x = x.to(model_device(ctx.model))
    classes = test.classes[: 4 if quick else len(test.classes)]
    layer = auto_layer(ctx.model, x)
    channels = top_channels(ctx.model, layer, x, len(classes))
    objectives = [Objective.logit(k) for k in range(len(classes))]
    objectives += [Objective.channel(layer, c) for c in channels]
    seeds = MAXIMISE_SEEDS[:1] if quick else MAXIMISE_SEEDS
    steps = int(ctx.options.get("maximise_steps", 32 if quick else MAXIMISE_STEPS))
    results = maximise_all(
        ctx.model,
        objectives,
        steps=steps,
        seeds=seeds,
        image_shape=test.image_shape,
        mean=test.mean,
        std=test.std,
        **MAXIMISE_OPTIONS,
    )
    own = [float(r.probabilities[:, k].mean()) for k, r in enumerate(results[: len(classes)])]
    class_names = list(classes)
    channel_names = [f"{layer}:{c}" for c in channels]
    rows = [dict(zip(["", *class_names], ["probability of the class", *own]))]
    return "\n".join(
        [
            "<h3>Activation maximisation</h3>",
            "<p>Images optimised to maximise a class logit (Simonyan et al. 2013) or a "
            "channel's mean activation (Erhan et al. 2009; the survey's section 3.4): "
            f"{steps} Adam steps on a Fourier parameterisation scaled by 1/frequency "
            "(Olah et al. 2017), with random jitter and zoom at every step and a "
            "total-variation penalty (Mahendran &amp; Vedaldi 2015); each row starts from "
            "another seed. Under each class image: the model's softmax probability of that "
            "class. The channels are, for each class in turn, the channel of "
            f"<code>{html.escape(layer)}</code> (the last feature map) with the largest "
            "weight into its logit; under each: the activation reached. "
            "<code>cnnlens inspect maximise</code> runs any class, layer or channel.</p>",
            figure_html(maximise_grid(results[: len(classes)], class_names), "class images"),
            table_html(rows, floatfmt="{:.3f}"),
            figure_html(maximise_grid(results[len(classes) :], channel_names), "channel images"),
        ]
    )


@section("internals", "Model internals", order=70)
def internals(ctx: ReportContext) -> str | None:
    quick = bool(ctx.options.get("quick"))
    parts = [similarity_part(ctx, quick)]
    if ctx.train is not None:
        parts.append(surrogate_part(ctx, quick))
    tcav = folder_tcav_part(ctx, quick) if ctx.options.get("concepts") else tcav_part(ctx, quick)
    if tcav is not None:
        parts.append(tcav)
    dissection = dissection_part(ctx, quick)
    if dissection is not None:
        parts.append(dissection)
    parts.append(maximise_part(ctx, quick))
    return "\n".join(parts)

"""``cnnlens inspect ...``: the survey's model-internal analyses (paper 001) from the shell.

    cnnlens inspect similarity --model runs/a [--other runs/b] --data shapes
    cnnlens inspect surrogate  --model runs/a --data shapes --max-depth 4
    cnnlens inspect rules      --model runs/a --data shapes --layers layer2,layer3
    cnnlens inspect tcav       --model runs/a --data shapes [--concepts striped,class=star]
    cnnlens inspect dissect    --model runs/a --data shapes [--layers layer3.2] [--n 2000]
    cnnlens inspect maximise   --model runs/a [--class star] [--layer layer3 --channel 5]
    cnnlens inspect maximise   --model runs/a --class star --facets 3   (multifaceted)
    cnnlens inspect invert     --model runs/a --layer layer2 [--index 0,1]
    cnnlens inspect concepts   --model runs/a --data shapes --layer layer2 [--channels 0,5]

Each subcommand reads a saved model (a model folder or a run folder holding
``model/``), runs one analysis of :mod:`cnnlens.analysis` on the data set's
splits and writes JSON (and a figure or text where one helps) to ``--out``,
by default ``MODEL/inspect/<subcommand>``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .model_spec import model_options, out_folder

inspect_app = typer.Typer(
    name="inspect",
    help="Look at the model itself: layer similarity, surrogate tree, dissection, "
    "activation maximisation, concept vectors (TCAV).",
    no_args_is_help=True,
)

DATA_HELP = "data set the model was trained on"
TCAV_RANDOM_SETS = 20  # the default number of random sets, where the val split holds them


def _open(model, data: str, split: str, n: int | None):
    """The model ``--model`` and its card options name, and the first ``n`` images of
    ``data``'s ``split`` read as its card says, checked to fit."""
    from ..errors import DataError

    net = model.open()
    images = _split(net, data, split)
    if n is not None:
        if n > len(images):
            raise DataError(f"--images {n} is more than the {len(images)} {split} images of {data}")
        images = images.subset(range(n))
    return net, images


def _split(net, data: str, split: str):
    """Split ``split`` of ``data`` read as ``net``'s card says, its classes the card's."""
    from ..loading.spec import model_data

    return model_data(net, data, split)


def _out(out: Path | None, model, name: str) -> Path:
    from ..io import check_writable_folder

    return check_writable_folder(out_folder(out, model, f"inspect/{name}"))


def _write_figure(path: Path, fig) -> None:
    from ..io import write_bytes
    from ..plotting import plt, to_png

    write_bytes(path, to_png(fig))
    plt.close(fig)


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    return names or None


@inspect_app.command(help="Linear CKA or SVCCA between every pair of layers.")
@model_options()
def similarity(
    model,
    other: Path = typer.Option(None, help="a second model (e.g. another seed) to compare with"),
    data: str = typer.Option("shapes", help=DATA_HELP),
    images: int = typer.Option(1000, min=4, help="test images (the first N)"),
    n: int = typer.Option(None, hidden=True, help="old spelling of --images"),
    method: str = typer.Option("cka", help="cka or svcca"),
    estimator: str = typer.Option("minibatch", help="CKA: minibatch (unbiased HSIC) or full"),
    reduce: str = typer.Option(None, help="flatten or mean (default: flatten for CKA)"),
    layers: str = typer.Option(None, help="comma list of layers (default: every block)"),
    out: Path = typer.Option(None, help="output folder (default MODEL/inspect/similarity)"),
) -> None:
    """Write similarity.json and similarity.png."""
    from ..analysis import layer_similarity
    from ..io import write_json
    from ..loading import load as load_model
    from ..report.similarity_heatmap import similarity_heatmap
    from .renamed import renamed

    n = renamed("--n", "--images", n, images, 1000)

    net, test = _open(model, data, "test", n)
    second = None if other is None else load_model(other)
    if second is not None:
        from ..compatibility import check_fits

        check_fits(second, test, data=data, by_name=True)
    folder = _out(out, model, "similarity")
    result = layer_similarity(
        net,
        test,
        other=second,
        layers=_names(layers),
        method=method,
        estimator=estimator,
        reduce=reduce,
        desc=f"{method} over {n} images",
    )
    write_json(folder / "similarity.json", result.to_dict())
    _write_figure(folder / "similarity.png", similarity_heatmap(result))
    diagonal = result.matrix.diagonal()
    if second is None:
        typer.echo(f"{len(result.rows)} layers: {', '.join(result.rows)}")
    else:
        pairs = ", ".join(f"{r} {v:.3f}" for r, v in zip(result.rows, diagonal.tolist()))
        typer.echo(f"same layer, two models: {pairs}")
    typer.echo(f"results written to {folder}")


@inspect_app.command(help="A decision tree imitating the network's predictions.")
@model_options()
def surrogate(
    model,
    data: str = typer.Option("shapes", help=DATA_HELP),
    n_train: int = typer.Option(None, min=1, help="training images the tree learns from"),
    images: int = typer.Option(None, min=1, help="test images for the fidelity"),
    n: int = typer.Option(None, hidden=True, help="old spelling of --images"),
    max_depth: int = typer.Option(4, min=1, help="the tree's depth limit"),
    min_samples_leaf: int = typer.Option(1, min=1),
    out: Path = typer.Option(None, help="output folder (default MODEL/inspect/surrogate)"),
) -> None:
    """Write surrogate.json and rules.txt."""
    from ..analysis import SurrogateTree
    from ..io import write_json, write_text
    from .renamed import renamed

    n = renamed("--n", "--images", n, images, None)

    net, test = _open(model, data, "test", n)
    train = _split(net, data, "train")
    if n_train is not None:
        train = train.subset(range(min(n_train, len(train))))
    folder = _out(out, model, "surrogate")
    tree = SurrogateTree(max_depth=max_depth, min_samples_leaf=min_samples_leaf)
    tree.fit(net, train)
    fidelity = tree.score(net, test)
    summary = {
        "max_depth": max_depth,
        "depth": tree.depth_,
        "leaves": tree.n_leaves_,
        "train_images": len(train),
        "test_images": len(test),
        "train_fidelity": tree.train_fidelity_,
        "test_fidelity": fidelity,
    }
    write_json(folder / "surrogate.json", summary)
    write_text(folder / "rules.txt", tree.rules_)
    typer.echo(tree.rules_)
    typer.echo(
        f"depth {tree.depth_}, {tree.n_leaves_} leaves: fidelity {100 * fidelity:.2f} % on "
        f"{len(test)} test images ({100 * tree.train_fidelity_:.2f} % on training images)"
    )
    typer.echo(f"results written to {folder}")


@inspect_app.command(
    help="Rules extracted layer by layer (DeepRED-style) from the data set's attributes, "
    "with their fidelity beside the global surrogate tree's on the same attributes."
)
@model_options()
def rules(
    model,
    data: str = typer.Option("shapes", help="a data set with attributes (shapes)"),
    layers: str = typer.Option("layer2,layer3", help="comma list of the layers to chain"),
    n_train: int = typer.Option(None, min=1, help="training images the trees learn from"),
    images: int = typer.Option(None, min=1, help="test images for the fidelity"),
    n: int = typer.Option(None, hidden=True, help="old spelling of --images"),
    max_depth: int = typer.Option(4, min=1, help="depth limit of every tree"),
    min_samples_leaf: int = typer.Option(5, min=1),
    out: Path = typer.Option(None, help="output folder (default MODEL/inspect/rules)"),
) -> None:
    """Write rules.json and rules.txt."""
    from ..analysis import LayerwiseRules, SurrogateTree
    from ..errors import DataError
    from ..io import write_json, write_text
    from .renamed import renamed

    n = renamed("--n", "--images", n, images, None)

    names = _names(layers)
    net, test = _open(model, data, "test", n)
    train = _split(net, data, "train")
    if n_train is not None:
        train = train.subset(range(min(n_train, len(train))))
    if train.attributes is None or test.attributes is None:
        raise DataError(f"{data} has no attributes per image; rules read them (try shapes)")
    chain = LayerwiseRules(names or [], max_depth=max_depth, min_samples_leaf=min_samples_leaf)
    chain._check(net)
    folder = _out(out, model, "rules")
    attrs = {"feature_names": train.attribute_names}
    chain.fit(net, train, features=train.attributes.float(), **attrs)
    fidelity = chain.score(net, test, features=test.attributes.float())
    tree = SurrogateTree(max_depth=max_depth, min_samples_leaf=min_samples_leaf)
    tree.fit(net, train, features=train.attributes.float(), **attrs)
    tree_fidelity = tree.score(net, test, features=test.attributes.float())
    summary = {
        "layers": names,
        "max_depth": max_depth,
        "train_images": len(train),
        "test_images": len(test),
        "layerwise": {
            "train_fidelity": chain.train_fidelity_,
            "test_fidelity": fidelity,
            "tree_leaves": chain.n_tree_leaves_,
            "composed_rules": chain.n_rules_,
        },
        "surrogate_tree": {
            "train_fidelity": tree.train_fidelity_,
            "test_fidelity": tree_fidelity,
            "leaves": tree.n_leaves_,
        },
    }
    write_json(folder / "rules.json", summary)
    write_text(folder / "rules.txt", chain.rules_ or "")
    typer.echo(
        f"layer-by-layer rules ({' -> '.join(names or [])}): fidelity {100 * fidelity:.2f} % "
        f"on {len(test)} test images, {chain.n_rules_} composed rules on the attributes"
    )
    typer.echo(
        f"global surrogate tree on the same attributes: fidelity {100 * tree_fidelity:.2f} %, "
        f"{tree.n_leaves_} leaves"
    )
    typer.echo(f"results written to {folder}")


@inspect_app.command(help="Concept activation vectors and TCAV scores (Kim et al. 2018).")
@model_options()
def tcav(
    model,
    data: str = typer.Option("shapes", help=DATA_HELP),
    concepts: str = typer.Option(
        None,
        help="comma list: attributes (striped, filled=0) and classes (class=star) of the data "
        "set's val split; default every attribute and every class",
    ),
    concept_folder: Path = typer.Option(
        None, help="a folder with one sub-folder of images per concept (instead of --concepts)"
    ),
    concept_images: int = typer.Option(50, min=2, help="images per concept (and random set)"),
    random: int = typer.Option(
        None,
        min=2,
        help="random sets (runs of the significance test; default 20, or as many as the val "
        "split holds)",
    ),
    layer: str = typer.Option(
        "mid", help="layer of the CAVs: a name, mid (2/3 through the blocks) or auto (last map)"
    ),
    cav: str = typer.Option("logistic", help="logistic or mean (mean difference)"),
    images: int = typer.Option(1000, min=1, help="test images whose classes are scored"),
    n: int = typer.Option(None, hidden=True, help="old spelling of --images"),
    bonferroni: bool = typer.Option(False, help="divide alpha by the number of tests"),
    significance: str = typer.Option(
        "exchangeable",
        "--test",
        help="significance test: exchangeable (calibrated) or kim (Kim et al.'s t-test, "
        "too many false positives when a concept's runs share its images)",
    ),
    seed: int = typer.Option(0, help="seed of the concept and random draws"),
    out: Path = typer.Option(None, help="output folder (default MODEL/inspect/tcav)"),
) -> None:
    """Write tcav.json and tcav.png."""
    from ..analysis import TCAV, folder_concepts, shapes_concepts
    from ..analysis.concepts.tcav import TEST_NAMES
    from ..errors import InputError
    from ..io import write_json
    from ..report.tcav_heatmap import tcav_heatmap
    from .renamed import renamed

    n = renamed("--n", "--images", n, images, 1000)

    net, test = _open(model, data, "test", n)
    val = _split(net, data, "val")
    if concept_folder is not None and concepts is not None:
        raise InputError("give either --concepts or --concept-folder, not both")
    if concept_folder is not None:
        size = test.image_shape[-1]
        sets = folder_concepts(concept_folder, mean=test.mean, std=test.std, size=size)
    else:
        names = _names(concepts)
        if names is None:
            names = [*(val.attribute_names or []), *(f"class={c}" for c in val.classes)]
        sets = shapes_concepts(val, names, n=concept_images, seed=seed)
    folder = _out(out, model, "tcav")
    if random is None:
        random = max(2, min(TCAV_RANDOM_SETS, len(val) // concept_images))
    fitted = TCAV(
        layer,
        n_random=random,
        cav=cav,
        random_size=concept_images,
        bonferroni=bonferroni,
        test=significance,
        seed=seed,
    ).fit(net, sets, random=val, desc="concept and random activations")
    result = fitted.score(net, test, desc="directional derivatives")
    write_json(folder / "tcav.json", result.to_dict())
    _write_figure(folder / "tcav.png", tcav_heatmap(result))
    significant = result.significant
    for c, concept in enumerate(result.concepts):
        cells = [
            f"{name} {result.mean[c, k]:.2f}{'*' if significant[c, k] else ''}"
            for k, name in enumerate(result.class_names)
        ]
        typer.echo(f"{concept}: {', '.join(cells)}")
    typer.echo(
        f"TCAV at {result.layer}, {random} random runs; * = p < {result.alpha / result.tests:.2g} "
        f"({TEST_NAMES[result.test]})"
    )
    typer.echo(f"results written to {folder}")


@inspect_app.command(help="Network dissection: which concept each channel segments (Bau et al.).")
@model_options()
def dissect(
    model,
    data: str = typer.Option("shapes", help=DATA_HELP + " (with object masks)"),
    images: int = typer.Option(None, min=1, help="test images (the first N; default all)"),
    n: int = typer.Option(None, hidden=True, help="old spelling of --images"),
    layers: str = typer.Option(
        None, "--layers", "--layer", help="comma list of layers (default: every block)"
    ),
    concepts: str = typer.Option(
        None,
        help="comma list: object, background, classes (class=star), attributes (striped, "
        "filled=0); default all of them",
    ),
    quantile: float = typer.Option(0.995, min=0, max=1, help="T_k: this quantile per channel"),
    iou_threshold: float = typer.Option(0.04, min=0, max=1, help="IoU a detector exceeds"),
    top_k: int = typer.Option(8, min=1, help="top activating images kept per channel"),
    rank_by: str = typer.Option("max", help="rank a channel's images by their max or mean"),
    figures: int = typer.Option(6, min=0, help="channels shown per top-images figure"),
    out: Path = typer.Option(None, help="output folder (default MODEL/inspect/dissect)"),
) -> None:
    """Write dissection.json, channels.csv, dissection.png and top-images figures."""
    from ..analysis import Dissection
    from ..analysis.tables import to_csv
    from ..io import write_json, write_text
    from ..report.dissection_figures import interpretability_chart, top_images_figure
    from .renamed import renamed

    n = renamed("--n", "--images", n, images, None)

    net, test = _open(model, data, "test", n)
    folder = _out(out, model, "dissect")
    fitted = Dissection(
        _names(layers),
        quantile=quantile,
        iou_threshold=iou_threshold,
        top_k=top_k,
        rank_by=rank_by,
    ).fit(net, test, _names(concepts), desc=f"dissection of {len(test)} images")
    result = fitted.result_
    write_json(folder / "dissection.json", result.to_dict())
    write_text(folder / "channels.csv", to_csv(result.channel_rows()))
    _write_figure(folder / "dissection.png", interpretability_chart(result))
    if figures:
        _write_figure(folder / "top-images.png", top_images_figure(result, test, count=figures))
        for d in result.layers:
            units = [(d.layer, c) for c in d.best_iou.argsort(descending=True).tolist()][:figures]
            path = folder / f"top-images-{d.layer}.png"
            _write_figure(path, top_images_figure(result, test, units))
    for row in result.summary():
        typer.echo(
            f"{row['layer']}: {row['interpretable']}/{row['channels']} interpretable "
            f"({100 * row['share']:.1f} %){': ' + row['detectors'] if row['detectors'] else ''}"
        )
    found = {c: k for c, k in result.detectors().items() if k}
    typer.echo(
        f"detectors (IoU > {result.iou_threshold:g}, T_k at quantile {result.quantile:g}, "
        f"{result.n_images} images): "
        + (", ".join(f"{c} {k}" for c, k in sorted(found.items(), key=lambda i: -i[1])) or "none")
    )
    typer.echo(f"results written to {folder}")


@inspect_app.command(
    help="Concept relevance (CRP): each channel's top images by relevance beside those by "
    "activation, with its conditional heatmaps (Achtibat et al. 2023)."
)
@model_options()
def concepts(
    model,
    layer: str = typer.Option(..., help="the layer whose channels are the concepts"),
    data: str = typer.Option("shapes", help=DATA_HELP),
    n: int = typer.Option(None, min=1, help="test images streamed (the first n; default all)"),
    channels: str = typer.Option(
        None, help="comma list of channels in the figure (default: the strongest by relevance)"
    ),
    top: int = typer.Option(8, min=1, help="reference images kept per channel and ranking"),
    target: str = typer.Option(
        None, "--class", help="rank by relevance for this class (default: each image's prediction)"
    ),
    composite: str = typer.Option("epsilon-plus", help="LRP composite"),
    figures: int = typer.Option(
        6, min=1, help="channels in the figure when --channels is not given"
    ),
    discover: int = typer.Option(
        None, min=1, help="also discover this many concepts of the layer (unsupervised)"
    ),
    discover_method: str = typer.Option(
        "nmf", help="how to discover them: nmf (CRAFT) or sae (top-k sparse autoencoder)"
    ),
    concepts_: str = typer.Option(
        None,
        "--concepts",
        help="link channels and discovered concepts to TCAV concepts: attributes (striped) "
        "and classes (class=star) of the data's val split",
    ),
    concept_folder: Path = typer.Option(
        None, help="a folder with one sub-folder of images per TCAV concept (instead of --concepts)"
    ),
    concept_images: int = typer.Option(30, min=2, help="images per TCAV concept and random set"),
    random: int = typer.Option(5, min=2, help="random sets of the TCAV significance test"),
    seed: int = typer.Option(0, help="seed of the discovery and the TCAV draws"),
    out: Path = typer.Option(None, help="output folder (default MODEL/inspect/concepts)"),
) -> None:
    """Write concepts.json, concepts.png and the reference store (references/, Zarr;
    rerun to reuse or resume it)."""
    from ..analysis.concepts.relmax import ReferenceImages, channel_names, reference_heatmaps
    from ..errors import InputError
    from ..io import write_json
    from ..report.concepts_figures import reference_figure
    from ..store.references import write_references

    if discover_method not in ("nmf", "sae"):
        raise InputError(f"--discover-method must be nmf or sae, got {discover_method!r}")
    if concept_folder is not None and concepts_ is not None:
        raise InputError("give either --concepts or --concept-folder, not both")
    net, test = _open(model, data, "test", n)
    sets = None
    if concepts_ is not None or concept_folder is not None:
        sets, val = _concept_sets(net, data, test, concepts_, concept_folder, concept_images, seed)
    folder = _out(out, model, "concepts")
    classes = list(getattr(test, "classes", []))
    cls = None if target is None else _index(target, "--class", classes)
    refs = ReferenceImages(layer, top=top, target=cls, composite=composite)
    identity = {**model.identity(), "data": data, "split": "test"}
    refs = write_references(folder / "references", net, test, refs, identity=identity)
    if channels is None:
        strongest = refs.value_["relevance"][:, 0].argsort(descending=True)
        shown = [int(c) for c in strongest[:figures]]
    else:
        shown = [_index(t, "--channels") for t in _names(channels) or []]
        bad = [c for c in shown if c >= refs.channels_]
        if bad:
            raise InputError(
                f"--channels {bad[0]} is not a channel of {layer} ({refs.channels_} channels)"
            )
    heatmaps = reference_heatmaps(net, test, refs, shown, composite=composite)
    names = channel_names(net, test, layer)
    result = refs.to_dict()
    result |= {"data": data, "composite": composite, "shown": shown, "named": names is not None}
    for row in result["channels"]:
        if names is not None:
            row["dissection"] = names[row["channel"]]
    bank = None
    if discover is not None:
        from ..analysis import discover_concepts

        bank = discover_concepts(net, test, layer, discover, method=discover_method, seed=seed)
        x = test.tensors()[0][: min(len(test), 256)]
        result["discovered"] = {
            **bank.to_dict(),
            "importance": bank.importance(net, x).mean(0).tolist(),
            "references": bank.references(net, test, top=top),
        }
    if sets is not None:
        result["tcav"] = _tcav_links(net, test, val, sets, layer, shown, bank, random, seed)
    write_json(folder / "concepts.json", result)
    labels = {c: _name_label(names[c]) for c in shown} if names else None
    _write_figure(
        folder / "concepts.png", reference_figure(refs, test, shown, heatmaps, names=labels, k=top)
    )
    for c in shown:
        row = result["channels"][c]
        said = f" ({_name_label(names[c])})" if names else ""
        typer.echo(
            f"{layer} #{c}{said}: by relevance {row['relevance']['images'][:4]}, "
            f"by activation {row['activation']['images'][:4]}"
        )
    typer.echo(f"results written to {folder}")


def _concept_sets(net, data, test, names, concept_folder, concept_images, seed):
    """The TCAV concept sets ``--concepts`` or ``--concept-folder`` give, and the val split
    the random sets come from."""
    from ..analysis import folder_concepts, shapes_concepts

    val = _split(net, data, "val")
    if concept_folder is not None:
        size = test.image_shape[-1]
        return folder_concepts(concept_folder, mean=test.mean, std=test.std, size=size), val
    return shapes_concepts(val, _names(names), n=concept_images, seed=seed), val


def _tcav_links(net, test, val, sets, layer, shown, bank, random, seed) -> dict:
    """TCAV of ``sets`` at ``layer`` and the links of the shown channels and the discovered
    concepts to them (:func:`cnnlens.analysis.tcav_links`)."""
    import torch

    from ..analysis import TCAV, tcav_links

    fitted = TCAV(layer, n_random=random, seed=seed).fit(net, sets, random=val)
    scores = fitted.score(net, test)
    channels = torch.eye(fitted.n_features_ // _positions(net, test, layer))[shown]
    out = {
        "layer": layer,
        "concepts": fitted.concepts_,
        "random_sets": random,
        "channels": tcav_links(fitted, scores, channels, [f"#{c}" for c in shown]),
    }
    if bank is not None:
        names = [f"concept {j}" for j in range(bank.k)]
        out["discovered"] = tcav_links(fitted, scores, bank.directions, names)
    return out


def _positions(net, test, layer: str) -> int:
    """``H * W`` of ``layer``'s output."""
    import torch

    from ..hooks import capture_outputs

    with torch.no_grad(), capture_outputs(net, [layer]) as out:
        net(test.tensors([0])[0])
    return int(out[layer][0, 0].numel())


def _name_label(name: dict) -> str:
    mark = "" if name["detector"] else "?"
    return f"{name['concept']}{mark} IoU {name['iou']:.2f}"


@inspect_app.command(help="Activation maximisation: images that maximise a class or a channel.")
@model_options()
def maximise(
    model,
    data: str = typer.Option("shapes", help=DATA_HELP),
    class_: str = typer.Option(
        None, "--class", help="comma list of class names or indices (default: every class)"
    ),
    layer: str = typer.Option(None, help="a layer whose channels to maximise (with --channel)"),
    channel: str = typer.Option(None, help="comma list of channels of --layer"),
    neuron: bool = typer.Option(False, help="the channel's centre neuron, not its mean"),
    negative: bool = typer.Option(False, help="minimise instead (negative objective)"),
    softmax: bool = typer.Option(
        False, help="maximise each class's log softmax (lowering the others) instead of its logit"
    ),
    seeds: int = typer.Option(4, min=1, help="images per objective (seeds 0..n-1)"),
    steps: int = typer.Option(256, min=1, help="optimisation steps"),
    param: str = typer.Option("fourier", help="image parameterisation: fourier or pixel"),
    lr: float = typer.Option(0.05, help="Adam's learning rate"),
    jitter: str = typer.Option("auto", help="random translation in pixels (auto: 1/16 side)"),
    scale: str = typer.Option(None, help="random zoom range lo,hi (e.g. 0.9,1.1)"),
    tv: float = typer.Option(0.0, min=0.0, help="weight of the total-variation penalty"),
    blur: float = typer.Option(None, help="Gaussian blur sigma in pixels, every --blur-every"),
    blur_every: int = typer.Option(4, min=1, help="steps between blurs"),
    decorrelate: bool = typer.Option(False, help="decorrelate colours as the data's are"),
    facets: int = typer.Option(
        None,
        min=1,
        help="multifaceted (Nguyen et al. 2016): K facets per class, from k-means clusters "
        "of its top training images in --facet-layer's features (pixel images)",
    ),
    facet_layer: str = typer.Option(None, help="layer for --facets (default: the CAM layer)"),
    facet_images: int = typer.Option(100, min=1, help="top training images clustered"),
    out: Path = typer.Option(None, help="output folder (default MODEL/inspect/maximise)"),
) -> None:
    """Write maximise.png (one column per objective, one row per seed) and maximise.json."""
    from ..analysis import Objective, colour_decorrelation, maximise_all
    from ..errors import InputError
    from ..io import write_json
    from ..report.maximise_grid import maximise_grid

    net, test = _open(model, data, "test", None)
    if facets is not None:
        if layer is not None or softmax or negative:
            raise InputError(
                "--facets maximises class logits: leave out --layer, --softmax, --negative"
            )
        return _facets(
            net, model, data, class_, facets, facet_layer, facet_images, steps, lr, tv, out
        )
    if channel is not None and layer is None:
        raise InputError("--channel needs --layer")
    if layer is not None and channel is None:
        raise InputError(f"--layer {layer} needs --channel (a comma list of channels)")
    classes = test.classes
    objectives, names = [], []
    wanted = _names(class_) or ([] if layer is not None else list(classes))
    for name in wanted:
        k = classes.index(name) if name in classes else _index(name, "--class", classes)
        objectives.append(Objective.log_softmax(k) if softmax else Objective.logit(k))
        names.append(classes[k] if k < len(classes) else str(k))
    for text in _names(channel) or []:
        c = _index(text, "--channel")
        objectives.append(Objective.neuron(layer, c) if neuron else Objective.channel(layer, c))
        names.append(f"{layer}:{c}")
    if negative:
        objectives = [-o for o in objectives]
        names = [f"-{n}" for n in names]
    matrix = None
    if decorrelate:
        matrix = colour_decorrelation(test.raw_batch(range(min(256, len(test)))))
    folder = _out(out, model, "maximise")
    results = maximise_all(
        net,
        objectives,
        parameterisation=param,
        steps=steps,
        lr=lr,
        seeds=tuple(range(seeds)),
        jitter=jitter if jitter == "auto" else _index(jitter, "--jitter"),
        scale=None if scale is None else _floats(scale, "--scale"),
        tv=tv,
        blur=blur,
        blur_every=blur_every,
        decorrelate=matrix,
        image_shape=test.image_shape,
        mean=test.mean,
        std=test.std,
        desc=f"{len(objectives)} x {seeds} images",
    )
    rows = []
    for name, result in zip(names, results):
        row = {"name": name, **result.to_dict()}
        row["predicted_class"] = [classes[k] for k in row["predicted"]]
        rows.append(row)
        if result.objective.is_class:
            shown = f"probability of {name}: " + ", ".join(
                f"{p:.3f}" for p in row["target_probability"]
            )
        else:
            shown = f"{result.objective.kind} value: " + ", ".join(f"{v:.3g}" for v in row["final"])
        typer.echo(f"{name}: {shown} (seeds 0..{seeds - 1})")
    write_json(folder / "maximise.json", {"data": data, "objectives": rows})
    _write_figure(folder / "maximise.png", maximise_grid(results, names))
    typer.echo(f"results written to {folder}")


def _facets(net, model, data, class_, k, layer, top, steps, lr, tv, out) -> None:
    """``maximise --facets K``: K facets per class (:func:`cnnlens.analysis.facets`)."""
    import torch

    from ..analysis import facets
    from ..io import write_json
    from ..layers import auto_layer
    from ..report.figures import image_grid

    train = _split(net, data, "train")
    classes = train.classes
    wanted = _names(class_) or list(classes)
    targets = [classes.index(n) if n in classes else _index(n, "--class", classes) for n in wanted]
    probe, _ = train.tensors([0])
    layer = layer or auto_layer(net, probe)
    folder = _out(out, model, "maximise")
    results = [facets(net, train, t, layer, k, top=top, steps=steps, lr=lr, tv=tv) for t in targets]
    rows, pixels, titles = [], [], []
    for t, result in zip(targets, results, strict=True):
        probs = result.logits.softmax(1)[:, t].tolist()
        sizes = torch.bincount(result.labels, minlength=k).tolist()
        rows.append(
            {"class": classes[t], "layer": layer, "cluster_sizes": sizes, "probability": probs}
        )
        pixels.append(result.pixels.cpu())
        titles += [f"{classes[t]} {i + 1} p={p:.2f}" for i, p in enumerate(probs)]
        typer.echo(f"{classes[t]}: {k} facets from clusters of {sizes} images, probability "
                   + ", ".join(f"{p:.3f}" for p in probs))  # fmt: skip
    write_json(folder / "facets.json", {"data": data, "facets": rows})
    _write_figure(folder / "facets.png", image_grid(torch.cat(pixels), titles, columns=k))
    typer.echo(f"results written to {folder}")


@inspect_app.command(
    help="Feature inversion (Mahendran & Vedaldi 2015): reconstruct test images from one "
    "layer's representation."
)
@model_options()
def invert(
    model,
    data: str = typer.Option("shapes", help=DATA_HELP),
    layer: str = typer.Option(..., help="the layer whose representation is inverted"),
    index: str = typer.Option("0,1,2,3", help="comma list of test images"),
    steps: int = typer.Option(200, min=1, help="Adam steps"),
    lr: float = typer.Option(0.1, help="Adam's learning rate"),
    alpha_weight: float = typer.Option(0.0, help="weight of the alpha-norm (alpha 6)"),
    tv: float = typer.Option(0.0, help="weight of the total variation"),
    seed: int = typer.Option(0, help="seed of the random start"),
    out: Path = typer.Option(None, help="output folder (default MODEL/inspect/invert)"),
) -> None:
    """Write invert.png (originals, then reconstructions) and invert.json (errors)."""
    import torch

    from ..analysis import invert as invert_images
    from ..analysis.visualisation.inversion import PARAMS
    from ..errors import DataError
    from ..io import write_json
    from ..layers import get_layer
    from ..params import check_params
    from ..report.figures import image_grid

    net, test = _open(model, data, "test", None)
    picked = [_index(t, "--index") for t in _names(index) or []]
    if not picked or max(picked) >= len(test):
        raise DataError(f"--index must name test images in [0, {len(test)}), got {index!r}")
    options = {"steps": steps, "lr": lr, "alpha_weight": alpha_weight, "tv": tv, "seed": seed}
    check_params("invert", options, PARAMS)
    get_layer(net, layer)
    folder = _out(out, model, "invert")
    x, _ = test.tensors(picked)
    result = invert_images(net, x, layer, mean=test.mean, std=test.std, **options)
    originals = test.raw_batch(picked)
    titles = [f"image {i}" for i in picked] + [f"from {layer}" for _ in picked]
    grid = image_grid(torch.cat([originals, result.pixels.cpu()]), titles, columns=len(picked))
    write_json(folder / "invert.json", {
        "layer": layer, "images": picked, "error": result.error.tolist(),
        "parameters": result.parameters,
    })  # fmt: skip
    _write_figure(folder / "invert.png", grid)
    typer.echo(
        f"normalised representation error at {layer}: "
        + ", ".join(f"{e:.4f}" for e in result.error.tolist())
    )
    typer.echo(f"results written to {folder}")


def _index(text: str, option: str, classes: list[str] | None = None) -> int:
    from ..errors import InputError

    try:
        value = int(text)
    except ValueError:
        known = f" (classes: {', '.join(classes)})" if classes else ""
        raise InputError(f"{option} {text!r} is not a non-negative integer{known}") from None
    if value < 0:
        raise InputError(f"{option} must be >= 0, got {value}")
    return value


def _floats(text: str, option: str) -> tuple[float, ...]:
    from ..errors import InputError

    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise InputError(f"{option} must be numbers separated by commas, got {text!r}") from None


def register(app: typer.Typer) -> None:
    app.add_typer(inspect_app)

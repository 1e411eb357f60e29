"""``cnnlens report``: the whole HTML report for a classifier on a data set.

    cnnlens report --model runs/x --data folder:/images --out runs/x/report
    cnnlens report --model runs/x --data folder:/images --concepts /concepts --quick ...

The demo's sections (predictions and confusion, explanations, faithfulness, class filters,
model internals) for any model the model spec opens and any data set cnnlens reads; a
section the data or model does not allow is left out with one line saying why. Class
names, normalisation and input size come from the model card (a cnnlens model's
``model.json``), the images are read at that size and normalised that way. Everything is
checked before the first file is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import CheckpointError, DataError, InputError
from .model_spec import model_options

BIG_MACS = 0.5e9  # a model above this per image gets fewer faithfulness images by default


def model_card(model, spec: str) -> dict:
    """``classes``, ``mean``, ``std``, ``input_shape`` of the opened model (None: unknown):
    its ``meta`` (set by the loader), else the ``model.json`` of a cnnlens folder."""
    from ..checkpoint import read_meta

    meta = getattr(model, "meta", None)
    if not isinstance(meta, dict):
        folder = Path(spec)
        folder = folder / "model" if (folder / "model" / "model.json").is_file() else folder
        meta = read_meta(folder) if (folder / "model.json").is_file() else {}
    return {k: meta.get(k) for k in ("classes", "mean", "std", "input_shape")}


def open_data(spec: str, split: str, card: dict):
    """Split ``split`` of ``spec`` read at the card's input size and normalised with its
    mean/std (:func:`cnnlens.loading.spec.card_data`)."""
    from ..loading.spec import card_data

    return card_data(spec, split, card)


def other_split(spec: str, split: str, card: dict, test):
    """Split ``split`` when the data has it apart from the test images, else None."""
    from ..report.model_report import same_images

    try:
        data = open_data(spec, split, card)
    except DataError:
        return None
    return None if same_images(data, test) else data


def check_classes(card: dict, test, data: str) -> None:
    """The model's class names must be the data set's, in its order."""
    names = card.get("classes")
    if names is None or list(names) == list(test.classes):
        return
    if sorted(names) == sorted(test.classes):
        raise InputError(
            f"the model's classes are those of {data} in another order: {names} vs "
            f"{list(test.classes)}"
        )
    raise InputError(f"the model's classes {names} are not those of {data}: {list(test.classes)}")


def open_vae(path: Path, test):
    """The VAE ``--vae`` names, checked to rebuild the test images' shape."""
    import torch

    from ..studies.relabel.vae_training import open_vae as load_vae

    folder = path / "model" if (path / "model" / "model.json").is_file() else path
    if not (folder / "model.json").is_file():
        raise InputError(f"--vae {path} holds no saved VAE (cnnlens train-vae writes one)")
    vae = load_vae(folder)
    x, _ = test.tensors([0])
    try:
        with torch.no_grad():
            fits = tuple(vae(x).shape) == tuple(x.shape)
    except RuntimeError:
        fits = False
    if not fits:
        raise InputError(f"--vae {path} does not rebuild {test.image_shape} images")
    return vae


def register(app: typer.Typer) -> None:
    @app.command()
    @model_options()
    def report(
        model,
        data: str = typer.Option(
            ...,
            help="data set: folder:/path (ImageFolder: <class>/*.png, optional train/ "
            "and test/), shapes, cifar10:/path, ...",
        ),  # fmt: skip
        out: Path = typer.Option(..., help="output folder (report.html)"),
        device: str = typer.Option(None, help="cpu, cuda, ... (default: where it loads)"),
        concepts: Path = typer.Option(
            None, help="TCAV: a folder with one folder of images per concept, and random/"
        ),
        vae: Path = typer.Option(None, help="re-label distillation: a VAE trained on the data"),
        images: int = typer.Option(8, min=1, max=64, help="test images explained"),
        test_images: int = typer.Option(
            500, min=1, help="test images read at most (predictions, confusion, analyses)"
        ),
        train_images: int = typer.Option(
            500, min=1, help="training images read at most (class filters, surrogate tree)"
        ),
        faithfulness_images: int = typer.Option(
            None,
            min=1,
            help="images of the metric table (default 8; 2 for a model over 0.5 G MACs per "
            "image, where one image costs about a minute of CPU)",
        ),
        quick: bool = typer.Option(
            False, "--quick", help="fewer random sets, seeds and steps in the model analyses"
        ),
    ) -> None:
        """Write the whole report (predictions, explanations, faithfulness, class filters,
        model internals) of a classifier on a data set."""
        from ..compatibility import check_fits
        from ..io import check_writable_folder
        from ..report.model_report import Sizes, check_concepts, concept_sets, model_report

        # validate, then write: every input below is checked before the first file
        check_writable_folder(out)
        net = model.open(device=device)
        card = model_card(net, model.spec)
        test = open_data(data, "test", card)
        if len(test) == 0:
            raise DataError(f"{data} has no test images")
        test = check_fits(net, test, data=data, by_name=True)
        check_classes(card, test, data)
        train = other_split(data, "train", card, test)
        val = other_split(data, "val", card, test) if test.attribute_names else None
        train, val = (
            None if part is None else check_fits(net, part, data=data, by_name=True)
            for part in (train, val)
        )
        if faithfulness_images is None:
            from ..cost import macs

            big = macs(net, tuple(test.image_shape)).total > BIG_MACS
            faithfulness_images = 2 if big else 8
        sizes = Sizes(
            test=test_images, train=train_images, explain=images, faithfulness=faithfulness_images
        )
        sets, random = None, None
        if concepts is not None:
            size = test.image_shape[-1]
            sets, random = concept_sets(concepts, mean=test.mean, std=test.std, size=size)
            pool = random if random is not None else test.subset(range(min(len(test), sizes.test)))
            check_concepts(sets, pool)
        relabel_vae = None if vae is None else open_vae(vae, test)
        run_file = Path(model.spec) / "run.json"
        history = []
        if run_file.is_file():
            try:
                history = json.loads(run_file.read_text(encoding="utf-8")).get("history", [])
            except (OSError, ValueError, AttributeError):
                raise CheckpointError(f"{run_file} is not a readable run file") from None
        arch = (getattr(net, "arch", None) or {}).get("name", type(net).__name__)
        path = model_report(
            net,
            test=test,
            train=train,
            val=val,
            out=out,
            title=f"cnnlens report: {arch} on {data}",
            sizes=sizes,
            history=history,
            concepts=sets,
            concept_random=random,
            vae=relabel_vae,
            quick=quick,
        )
        typer.echo(f"report written to {path.resolve()}")

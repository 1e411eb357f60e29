"""The report of any classifier on any data set cnnlens reads (``cnnlens report``).

The demo's sections (``report/sections``: same ids, titles and figure rule), with the sizes a
big model on a CPU needs: the test and training images are capped (taken in turn from each
class, so the first images any section reads cover every class) and explanations and
faithfulness use a few images. :func:`plan` decides before any work which sections the
model and data allow; each section, or part of one, left out gets one line in the report's
"Not shown" list with the reason (no masks, no training split, no gated run, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.base import ImageDataset
from ..errors import InputError
from . import ReportContext, build_report, registered_sections


@dataclass(frozen=True)
class Sizes:
    """How many images the report reads: ``test`` and ``train`` cap the splits (every
    section reads at most these), ``explain`` and ``faithfulness`` are the images of those
    two sections, ``maximise_steps`` the optimisation steps of activation maximisation."""

    test: int = 500
    train: int = 500
    explain: int = 8
    faithfulness: int = 8
    maximise_steps: int = 32


# Sections the report never runs for a given model, with the reason (paper systems that need
# trained parts of their own, or the generated data set's own ground truth).
NEEDS_OWN_PARTS = {
    "object-check": "needs the test images redrawn without their object, which only the "
    "generated shapes data set can do",
    "attributes": "needs the attribute network of paper 003, trained on a data set with "
    "attribute labels (cnnlens attributes train); not part of a given model",
    "drib": "needs a DRIB-gated copy of this model (paper 000: cnnlens drib); not part of a "
    "given model",
    "drib-baselines": "trains pruned copies of the model and a network of its own (paper 000: "
    "cnnlens drib-baseline); too long for a model's report",
}
VAE_REASON = "needs a VAE trained on this data (paper 004: cnnlens train-vae, then --vae FOLDER)"
NO_TRAIN = "the data has no training split apart from the test images (give a folder with "
NO_TRAIN += "train/ and test/ sub-folders, or a data set with both splits)"


def interleaved(data: ImageDataset, n: int) -> ImageDataset:
    """At most ``n`` images of ``data``, taken in turn from each class (in class order, each
    class's images in their order), so the first images cover every class. Deterministic."""
    per_class = [
        torch.nonzero(data.labels == k).flatten().tolist() for k in range(data.num_classes)
    ]
    order: list[int] = []
    depth = 0
    while len(order) < min(n, len(data)):
        order += [ids[depth] for ids in per_class if depth < len(ids)][: n - len(order)]
        depth += 1
    return data.subset(order)


def same_images(a: ImageDataset, b: ImageDataset) -> bool:
    """Whether two splits are the same images (an ImageFolder without train/ and test/
    gives its one set for every split)."""
    if len(a) != len(b):
        return False
    first = list(range(min(4, len(a))))
    return bool(torch.equal(a.labels, b.labels)) and bool(
        torch.equal(a.raw_batch(first), b.raw_batch(first))
    )


def plan(
    test: ImageDataset,
    train: ImageDataset | None,
    *,
    history: bool,
    concepts: bool,
    vae: bool,
) -> tuple[list[str], list[tuple[str, str]]]:
    """The section ids to run and ``(what, why)`` for each section or part left out."""
    titles = dict(registered_sections())
    left: list[tuple[str, str]] = []

    def part(section: str, what: str, why: str) -> None:
        left.append((f"{titles[section]}: {what}", why))

    if not history:
        part("training", "training curves", "no training history (the model is not a cnnlens "
             "run folder with run.json)")  # fmt: skip
    if test.boxes is None and test.masks is None:
        part("faithfulness", "localisation scores (box score, pointing game)",
             "the data has no object boxes or masks")  # fmt: skip
    if train is None:
        left.append((titles["class-filters"], NO_TRAIN))
        part("internals", "surrogate decision tree", NO_TRAIN)
    if not concepts:
        part("internals", "concept vectors (TCAV)", "no concept folders given (--concepts DIR: "
             "one folder of images per concept, and random/ for the random images)")  # fmt: skip
    if test.masks is None:
        part("internals", "network dissection", "the data has no object masks")
        part("concepts", "channel names (dissection concepts)", "the data has no object masks")
    if not vae:
        left.append((titles["relabel"], VAE_REASON))
    left += [(titles[key], why) for key, why in NEEDS_OWN_PARTS.items() if key in titles]
    skip = {*NEEDS_OWN_PARTS, *(() if vae else ("relabel",))}
    skip |= set() if train is not None else {"class-filters"}
    return [key for key in titles if key not in skip], left


def concept_sets(
    folder: str | Path, *, mean, std, size: int, option: str = "--concepts"
) -> tuple[dict, ImageDataset | None]:
    """The concepts of ``folder`` (one sub-folder of images each) and its ``random/``
    images (None when absent: the test images serve as random images)."""
    from ..analysis import folder_concepts

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{option} {folder} is not a folder of concept folders")
    sets = folder_concepts(folder, mean=mean, std=std, size=size)
    random = sets.pop("random", None)
    if not sets:
        raise InputError(f"{option} {folder} holds no concept folder besides random/")
    small = [name for name, c in sets.items() if len(c) < 2]
    if small:
        raise InputError(f"{option}: concepts {small} need at least 2 images each")
    pool = None if random is None else random.data.subset(random.indices)
    return sets, pool


def check_concepts(sets: Mapping, random: ImageDataset, *, option: str = "--concepts") -> None:
    """Refuse random images too few for two random sets of a concept's size (TCAV's test)."""
    from .sections.internals import TCAV_CONCEPT_IMAGES

    size = min(TCAV_CONCEPT_IMAGES, *(len(c) for c in sets.values()))
    if len(random) < 2 * size:
        raise InputError(
            f"{option}: TCAV needs at least {2 * size} random images (two sets of {size}); "
            f"there are {len(random)}"
        )


def model_report(
    model: nn.Module,
    *,
    test: ImageDataset,
    train: ImageDataset | None,
    out: str | Path,
    title: str,
    sizes: Sizes = Sizes(),
    history: list[dict] | None = None,
    val: ImageDataset | None = None,
    concepts: dict | None = None,
    concept_random: ImageDataset | None = None,
    vae: nn.Module | None = None,
    quick: bool = False,
) -> Path:
    """Write ``out/report.html`` for ``model`` on ``test`` (and ``train`` when the data has
    a training split of its own); everything is checked by the caller first."""
    test = interleaved(test, sizes.test)
    train = None if train is None else interleaved(train, sizes.train)
    attributes = val is not None and bool(val.attribute_names)  # TCAV of the data's attributes
    only, left = plan(
        test,
        train,
        history=bool(history),
        concepts=bool(concepts) or attributes,
        vae=vae is not None,
    )
    options = {
        "quick": quick,
        "explain_images": sizes.explain,
        "faithfulness_images": sizes.faithfulness,
        "maximise_steps": sizes.maximise_steps,
        "not-shown": left,
    }
    if concepts:
        options["concepts"] = concepts
        if concept_random is not None:
            options["concept_random"] = concept_random
    if vae is not None:
        options["vae"] = vae
    ctx = ReportContext(
        model=model,
        train=train,
        val=val,
        test=test,
        out=Path(out),
        history=list(history or []),
        title=title,
        options=options,
    )
    return build_report(ctx, Path(out) / "report.html", only=only)

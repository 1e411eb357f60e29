"""ImageNet-style validation images with Pascal-VOC XML bounding boxes.

Layout: ``path/images/`` (``ILSVRC2012_val_00000001.JPEG`` ...) and ``path/annotations/``
(one ``<stem>.xml`` per image); other folders via ``images=`` / ``annotations=`` (relative to
``path`` or absolute). Each XML is ``<annotation><filename/><size><width/><height/></size>
<object><name>n01440764</name><bndbox><xmin/><ymin/><xmax/><ymax/></bndbox></object>...``. The
annotations drive the data set: an image without an XML is ignored, an XML without its image
(matched by ``<filename>``'s stem, else the XML's stem) is an error.

Classes: an optional class list, one synset a line, optionally followed by a readable name
(``n01440764 tench, Tinca tinca``), from ``class_list=`` or ``path/classes.txt`` /
``path/LOC_synset_mapping.txt``; the label is the synset's line number and ``classes`` the
readable names (``synsets`` keeps the ids). Without a list, the sorted synsets found are used.

Ground truth: the label is the first object's class. Images are resized to ``size`` x ``size``
(default 224, no crop) and boxes scaled with them (x and y separately, as inclusive pixel
ranges). ``boxes`` ``[N,4]`` is the union of the boxes of the objects of the label's class;
``all_boxes`` / ``all_box_labels`` keep every object. Box coordinates are read as 0-based pixel
indices (ImageNet); ``one_based=True`` for 1-based VOC files. Normalisation defaults to the
ImageNet mean/std. Every split gives the whole set. XML is parsed with ``defusedxml`` when
installed, else the standard library (fine for local files one trusts).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import DataError
from .. import register
from .common import check_split, read_text_lines
from .files import FileDataset, image_size, is_image

try:  # pragma: no cover - optional hardening
    from defusedxml.ElementTree import parse as parse_xml
except ImportError:
    parse_xml = ElementTree.parse

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLASS_LISTS = ("classes.txt", "LOC_synset_mapping.txt")


@dataclass
class Annotation:
    """One XML file: its image's name, size (or None) and objects ``(synset, x0, y0, x1, y1)``."""

    filename: str | None
    size: tuple[int, int] | None
    objects: list[tuple[str, int, int, int, int]]


def _int(element: ElementTree.Element, tag: str, file: Path) -> int:
    text = element.findtext(tag)
    try:
        return round(float(text))
    except (TypeError, ValueError) as e:
        raise DataError(f"{file}: <{tag}> must be a number, got {text!r}") from e


def read_annotation(file: Path) -> Annotation:
    """Parse one VOC XML file; DataError naming it when it is malformed."""
    try:
        root = parse_xml(file).getroot()
    except (ElementTree.ParseError, OSError, ValueError) as e:
        raise DataError(f"{file}: not a readable XML file ({e})") from e
    if root.tag != "annotation":
        raise DataError(f"{file}: root element is <{root.tag}>, expected <annotation>")
    size_el = root.find("size")
    size = None
    if size_el is not None and size_el.find("width") is not None:
        size = (_int(size_el, "width", file), _int(size_el, "height", file))
        if min(size) < 1:
            raise DataError(f"{file}: image size {size} must be positive")
    objects = []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            raise DataError(f"{file}: every <object> needs a <name> and a <bndbox>")
        coords = tuple(_int(box, t, file) for t in ("xmin", "ymin", "xmax", "ymax"))
        if coords[2] < coords[0] or coords[3] < coords[1]:
            raise DataError(f"{file}: box {coords} has xmax < xmin or ymax < ymin")
        objects.append((name, *coords))
    if not objects:
        raise DataError(f"{file}: no <object>, so the image has no label")
    filename = (root.findtext("filename") or "").strip() or None
    return Annotation(filename, size, objects)


def read_class_list(file: Path) -> tuple[list[str], list[str]]:
    """Synsets and readable names (the synset when a line has none) from a class list."""
    synsets, names = [], []
    for line in read_text_lines(file):
        if line:
            synset, _, name = line.partition(" ")
            synsets.append(synset)
            names.append(name.strip() or synset)
    if not synsets:
        raise DataError(f"{file}: the class list is empty")
    if len(set(synsets)) != len(synsets):
        raise DataError(f"{file}: a synset is listed twice")
    return synsets, names


def scale_box(box: Sequence[int], size: tuple[int, int], new: int) -> list[int]:
    """An inclusive pixel box in a ``size = (w, h)`` image scaled to a ``new`` x ``new`` one.

    Pixel ``i`` covers ``[i, i+1)``; the scaled box is the smallest set of new pixels covering
    the same area, clamped to the image (integer arithmetic, so no rounding drift).
    """
    out = []
    for value, extent, is_end in zip(box, (*size, *size), (False, False, True, True)):
        value = min(max(value, 0), extent - 1)
        out.append(-(-(value + 1) * new // extent) - 1 if is_end else value * new // extent)
    return out


def _folder(root: Path | None, given: str | Path | None, default: str, what: str) -> Path:
    folder = Path(given).expanduser() if given is not None else None
    if folder is None or not folder.is_absolute():
        if root is None:
            raise DataError(f"imagenet-val: give path= or an absolute {what}= folder")
        folder = root / (folder or default)
    if not folder.is_dir():
        raise DataError(f"imagenet-val: {what} folder {folder} does not exist")
    return folder


@register("imagenet-val", "ImageNet-style images with VOC XML boxes: path/images, path/annotations")
def load_imagenet_val(
    split: str = "val",
    path: str | Path | None = None,
    images: str | Path | None = None,
    annotations: str | Path | None = None,
    class_list: str | Path | None = None,
    size: int = 224,
    one_based: bool = False,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> FileDataset:
    """Images with VOC XML boxes; see the module docstring."""
    check_split("imagenet-val", split)
    root = Path(path).expanduser() if path else None
    image_dir = _folder(root, images, "images", "images")
    xml_dir = _folder(root, annotations, "annotations", "annotations")
    xml_files = sorted(p for p in xml_dir.iterdir() if p.suffix.lower() == ".xml")
    if not xml_files:
        raise DataError(f"imagenet-val: no .xml annotation files in {xml_dir}")
    by_stem = {p.stem: p for p in sorted(image_dir.iterdir()) if is_image(p)}
    list_file = Path(class_list).expanduser() if class_list is not None else None
    if list_file is None and root is not None:
        list_file = next((root / n for n in CLASS_LISTS if (root / n).is_file()), None)
    notes = [read_annotation(f) for f in xml_files]
    if list_file is not None:
        synsets, classes = read_class_list(list_file)
    else:
        synsets = sorted({o[0] for a in notes for o in a.objects})
        classes = list(synsets)
    index = {s: i for i, s in enumerate(synsets)}
    paths, labels, boxes, all_boxes, all_labels = [], [], [], [], []
    for file, note in zip(xml_files, notes):
        stems = [Path(note.filename).stem] if note.filename else []
        image = next((by_stem[s] for s in [*stems, file.stem] if s in by_stem), None)
        if image is None:
            wanted = stems[0] if stems else file.stem
            raise DataError(f"{file}: no image named {wanted}.* in {image_dir}")
        unknown = [o[0] for o in note.objects if o[0] not in index]
        if unknown:
            raise DataError(f"{file}: class {unknown[0]!r} is not in {list_file or 'the list'}")
        extent = note.size or image_size(image)
        shift = 1 if one_based else 0
        scaled = torch.tensor(
            [scale_box([c - shift for c in o[1:]], extent, size) for o in note.objects]
        )
        classes_of = torch.tensor([index[o[0]] for o in note.objects])
        own = scaled[classes_of == classes_of[0]]
        boxes.append(torch.cat([own[:, :2].min(0).values, own[:, 2:].max(0).values]))
        all_boxes.append(scaled)
        all_labels.append(classes_of)
        paths.append(image)
        labels.append(int(classes_of[0]))
    dataset = FileDataset(
        paths,
        torch.tensor(labels, dtype=torch.long),
        classes=classes,
        size=size,
        mean=mean,
        std=std,
        boxes=torch.stack(boxes),
        all_boxes=all_boxes,
        all_box_labels=all_labels,
        name="imagenet-val",
    )
    dataset.synsets = synsets
    return dataset

"""Readers for data sets on disk, each tested on small files written in the real format."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlens.data import load
from cnnlens.data.readers import FileDataset
from cnnlens.data.readers.imagenet_val import scale_box
from cnnlens.errors import DataError
from helpers import CELEBA_ATTRS as ATTRS
from helpers import write_celeba

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer"] + [
    "dog", "frog", "horse", "ship", "truck"
]  # fmt: skip


# --- writers for the real formats ---------------------------------------------------------


def cifar_records(labels: list[list[int]], seed: int = 0) -> tuple[bytes, np.ndarray]:
    """Binary CIFAR records (label bytes + 3072 pixel bytes each) and their pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    rows = [bytes(lab) + px.tobytes() for lab, px in zip(labels, pixels)]
    return b"".join(rows), pixels.reshape(-1, 3, 32, 32)


def write_cifar10(root: Path) -> dict[str, np.ndarray]:
    root.mkdir(parents=True)
    pixels = {}
    for i in range(1, 6):
        data, pixels[f"data_batch_{i}"] = cifar_records([[i], [9 - i], [0]], seed=i)
        (root / f"data_batch_{i}.bin").write_bytes(data)
    data, pixels["test_batch"] = cifar_records([[3], [7]], seed=9)
    (root / "test_batch.bin").write_bytes(data)
    (root / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    return pixels


def write_idx(path: Path, magic: int, array: np.ndarray, gz: bool = False) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def write_mnist(root: Path, gz: bool = False, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    ext = ".gz" if gz else ""
    for stem in ("train", "t10k"):
        write_idx(root / f"{stem}-images-idx3-ubyte{ext}", 2051, images, gz)
        write_idx(root / f"{stem}-labels-idx1-ubyte{ext}", 2049, labels, gz)
    return images, labels


def write_image(path: Path, color: tuple[int, int, int], size=(8, 6), fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)


# --- CIFAR --------------------------------------------------------------------------------


def test_cifar10_reads_binary_batches(tmp_path):
    pixels = write_cifar10(tmp_path / "cifar-10-batches-bin")
    train = load(f"cifar10:{tmp_path}", split="train")  # the parent folder works too
    assert len(train) == 15 and train.images.dtype == torch.uint8
    assert train.images.shape == (15, 3, 32, 32)
    assert train.labels.tolist()[:6] == [1, 8, 0, 2, 7, 0]
    assert torch.equal(train.images[3:6], torch.from_numpy(pixels["data_batch_2"]))
    assert train.classes == CIFAR10_NAMES
    assert train.mean == pytest.approx((0.4914, 0.4822, 0.4465))
    test = load(f"cifar10:{tmp_path / 'cifar-10-batches-bin'}", split="test")
    assert test.labels.tolist() == [3, 7]
    assert torch.equal(test.images, torch.from_numpy(pixels["test_batch"]))
    assert len(load(f"cifar10:{tmp_path}", split="val")) == 2


def test_cifar100_fine_and_coarse_labels(tmp_path):
    root = tmp_path / "cifar-100-binary"
    root.mkdir()
    data, pixels = cifar_records([[1, 42], [19, 99], [0, 0]])
    (root / "train.bin").write_bytes(data)
    (root / "test.bin").write_bytes(data[: 2 * 3074])
    (root / "fine_label_names.txt").write_text("\n".join(f"fine{i}" for i in range(100)))
    (root / "coarse_label_names.txt").write_text("\n".join(f"coarse{i}" for i in range(20)))
    fine = load(f"cifar100:{root}")
    assert fine.labels.tolist() == [42, 99, 0] and fine.num_classes == 100
    assert fine.classes[42] == "fine42"
    assert torch.equal(fine.images, torch.from_numpy(pixels))
    coarse = load(f"cifar100:{tmp_path}", split="test", label="coarse")
    assert coarse.labels.tolist() == [1, 19] and coarse.classes[19] == "coarse19"
    with pytest.raises(DataError, match="fine"):
        load(f"cifar100:{root}", label="medium")


def test_cifar_truncated_file_names_file_and_bytes(tmp_path):
    root = tmp_path / "c"
    write_cifar10(root)
    data = (root / "test_batch.bin").read_bytes()
    (root / "test_batch.bin").write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"test_batch\.bin: 6046 bytes"):
        load(f"cifar10:{root}", split="test")
    (root / "test_batch.bin").write_bytes(b"")
    with pytest.raises(DataError, match="0 bytes"):
        load(f"cifar10:{root}", split="test")


def test_cifar_missing_and_bad_files(tmp_path):
    root = tmp_path / "c"
    write_cifar10(root)
    (root / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match=r"data_batch_3\.bin: file is missing"):
        load(f"cifar10:{root}")
    (root / "batches.meta.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match=r"batches\.meta\.txt: expected 10 class names, found 2"):
        load(f"cifar10:{root}", split="test")
    (root / "batches.meta.txt").unlink()
    with pytest.raises(DataError, match=r"batches\.meta\.txt: file is missing"):
        load(f"cifar10:{root}", split="test")
    (root / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES))
    (root / "test_batch.bin").write_bytes(cifar_records([[3], [12]])[0])
    with pytest.raises(DataError, match=r"test_batch\.bin: record 1 has label 12"):
        load(f"cifar10:{root}", split="test")


def test_cifar_bad_path_and_split(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load(f"cifar10:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="give its folder"):
        load("cifar10")
    with pytest.raises(DataError, match=r"test_batch\.bin found"):
        load(f"cifar10:{tmp_path}")
    write_cifar10(tmp_path / "c")
    with pytest.raises(DataError, match="not 'holdout'"):
        load(f"cifar10:{tmp_path / 'c'}", split="holdout")


# --- MNIST --------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files(tmp_path, gz):
    images, labels = write_mnist(tmp_path, gz=gz)
    native = load(f"mnist:{tmp_path}", split="test", size=None)
    assert native.images.shape == (4, 1, 28, 28)
    assert torch.equal(native.images[:, 0], torch.from_numpy(images))
    assert native.labels.tolist() == labels.tolist() and native.classes[3] == "3"
    resized = load(f"mnist:{tmp_path}")
    assert resized.images.shape == (4, 1, 32, 32) and resized.images.dtype == torch.uint8
    x, y = resized.tensors()
    assert x.shape == (4, 1, 32, 32) and y.tolist() == labels.tolist()
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(images)[:, None].float(), size=(32, 32), mode="bilinear"
    )
    assert (resized.images.float() - expected).abs().max() <= 0.5


def test_fashion_mnist_names_and_layouts(tmp_path):
    write_mnist(tmp_path / "FashionMNIST" / "raw", gz=True)
    data = load(f"fashion-mnist:{tmp_path}", channels=3, size=16)
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert data.images.shape == (4, 3, 16, 16) and data.mean == (0.2860,) * 3
    dotted = tmp_path / "dotted"
    dotted.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        src = tmp_path / "FashionMNIST" / "raw" / f"{name}.gz"
        (dotted / name.replace("-idx", ".idx")).write_bytes(gzip.decompress(src.read_bytes()))
    assert len(load(f"mnist:{dotted}")) == 4


def test_mnist_errors(tmp_path):
    images, labels = write_mnist(tmp_path)
    img_file = tmp_path / "train-images-idx3-ubyte"
    write_idx(img_file, 2049, images)
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte: magic number 2049, expected 2051"
    ):
        load(f"mnist:{tmp_path}")
    write_idx(img_file, 2051, images)
    img_file.write_bytes(img_file.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"3147 bytes, but dimensions \[4, 28, 28\] need 3152"):
        load(f"mnist:{tmp_path}")
    img_file.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="2 bytes is too short"):
        load(f"mnist:{tmp_path}")
    write_idx(img_file, 2051, images[:3])
    with pytest.raises(DataError, match="holds 3 images but .* 4 labels"):
        load(f"mnist:{tmp_path}")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", 2049, np.array([0, 1, 2, 11]))
    with pytest.raises(DataError, match="label 11"):
        load(f"mnist:{tmp_path}", split="test")
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\[\.gz\] not found"):
        load(f"mnist:{tmp_path}", split="test")
    gz_dir = tmp_path / "gz"
    write_mnist(gz_dir, gz=True)
    bad = gz_dir / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-8])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: cannot read"):
        load(f"mnist:{gz_dir}")


# --- ImageFolder --------------------------------------------------------------------------


def test_folder_reads_classes_lazily(tmp_path):
    write_image(tmp_path / "dog" / "a.png", (255, 0, 0))
    write_image(tmp_path / "dog" / "b.JPG", (255, 0, 0), fmt="JPEG")
    write_image(tmp_path / "cat" / "x" / "c.bmp", (0, 0, 255))
    write_image(tmp_path / "cat" / "d.webp", (0, 0, 255), size=(40, 20))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "empty_class").mkdir()
    data = load(f"folder:{tmp_path}")
    assert isinstance(data, FileDataset)
    assert data.classes == ["cat", "dog", "empty_class"]
    assert data.labels.tolist() == [0, 0, 1, 1]
    assert [p.name for p in data.paths] == ["d.webp", "c.bmp", "a.png", "b.JPG"]
    raw = data.raw(0)
    assert raw.shape == (3, 32, 32) and raw.dtype == torch.float32
    assert torch.allclose(raw[2], torch.ones(32, 32), atol=0.02)
    assert data.mean == pytest.approx((0.5, 0.0, 0.5), abs=0.02)
    assert data.std == pytest.approx((0.5, 0.001, 0.5), abs=0.02)
    x, y = data.tensors()
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 1, 1]
    small = load(f"folder:{tmp_path}", size=8, mean=(0.5,) * 3, std=(0.25,) * 3, split="test")
    assert small.raw(1).shape == (3, 8, 8) and small.std == (0.25,) * 3
    part = small.subset([3, 0])
    assert part.labels.tolist() == [1, 0] and part.paths[0].name == "b.JPG"
    data.verify()


def test_folder_split_folders(tmp_path):
    write_image(tmp_path / "train" / "a" / "1.png", (10, 10, 10))
    write_image(tmp_path / "train" / "b" / "2.png", (20, 20, 20))
    write_image(tmp_path / "val" / "b" / "3.png", (30, 30, 30))
    train = load(f"folder:{tmp_path}", split="train")
    val = load(f"folder:{tmp_path}", split="val")
    test = load(f"folder:{tmp_path}", split="test")  # no test/: falls back to val/
    assert train.classes == val.classes == ["a", "b"]
    assert len(train) == 2 and val.labels.tolist() == [1] and test.paths == val.paths


def test_folder_unreadable_image(tmp_path):
    write_image(tmp_path / "a" / "good.png", (1, 2, 3))
    bad = tmp_path / "a" / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    data = load(f"folder:{tmp_path}", mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(DataError, match=r"bad\.png: Pillow cannot read"):
        data[0]
    assert data[1][0].shape == (3, 32, 32)
    with pytest.raises(DataError, match=r"1 unreadable image.*bad\.png"):
        data.verify()
    with pytest.raises(DataError, match=r"bad\.png"):
        load(f"folder:{tmp_path}")  # computing mean/std opens it
    bad.unlink()
    data = load(f"folder:{tmp_path}", mean=(0.5,) * 3, std=(0.5,) * 3)
    (tmp_path / "a" / "good.png").unlink()
    with pytest.raises(DataError, match=r"good\.png: image file is missing"):
        data.raw(0)


def test_folder_empty(tmp_path):
    with pytest.raises(DataError, match="no class folders"):
        load(f"folder:{tmp_path}")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        load(f"folder:{tmp_path}")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        load(f"folder:{tmp_path / 'file'}")


# --- CelebA -------------------------------------------------------------------------------


@pytest.fixture
def celeba_root(tmp_path) -> Path:
    (tmp_path / "img_align_celeba").mkdir()
    write_celeba(tmp_path)
    return tmp_path


def test_celeba_attributes_and_target(celeba_root):
    train = load(f"celeba:{celeba_root}", mean=(0.5,) * 3, std=(0.5,) * 3)
    assert train.attribute_names == ATTRS and train.attributes.dtype == torch.bool
    assert train.attributes.tolist() == [[True, False, True], [False, True, True]] + [
        [False, True, False]
    ]
    assert train.classes == ["not 5_o_Clock_Shadow", "5_o_Clock_Shadow"]
    assert train.labels.tolist() == [1, 0, 0]
    smiling = load(f"celeba:{celeba_root}", split="train", target="Smiling", size=16)
    assert smiling.classes == ["not Smiling", "Smiling"] and smiling.labels.tolist() == [0, 1, 1]
    raw = smiling.raw(0)
    assert raw.shape == (3, 16, 16)
    assert raw[1].min() > 0.8 and raw[0].max() < 0.2 and raw[2].max() < 0.2  # centre crop
    assert smiling.mean == pytest.approx((0, 1, 0), abs=0.03)
    val, test = (load(f"celeba:{celeba_root}", split=s, size=8) for s in ("val", "test"))
    assert [p.name for p in val.paths] == ["000004.jpg"] and test.attributes.tolist() == [
        [False, False, False]
    ]
    assert train.describe()["attribute_names"] == ATTRS


def test_celeba_kaggle_nested_folder(celeba_root):
    nested = celeba_root / "img_align_celeba" / "img_align_celeba"
    nested.mkdir()
    for p in (celeba_root / "img_align_celeba").glob("*.jpg"):
        p.rename(nested / p.name)
    data = load(f"celeba:{celeba_root}", split="test", size=8)
    assert data.raw(0).shape == (3, 8, 8)


def test_celeba_malformed_files(celeba_root):
    attr = celeba_root / "list_attr_celeba.txt"
    good = attr.read_text().splitlines()
    attr.write_text("\n".join(good[:3] + [good[3] + " 1"] + good[4:]))
    with pytest.raises(DataError, match=r"list_attr_celeba\.txt:4: expected a filename and 3"):
        load(f"celeba:{celeba_root}")
    attr.write_text("\n".join(good[:4] + ["000004.jpg 1 0 1"] + good[5:]))
    with pytest.raises(DataError, match=r"list_attr_celeba\.txt:5:"):
        load(f"celeba:{celeba_root}")
    attr.write_text("\n".join(["five"] + good[1:]))
    with pytest.raises(DataError, match=r"list_attr_celeba\.txt:1: expected the number"):
        load(f"celeba:{celeba_root}")
    attr.write_text("\n".join(["6"] + good[1:]))
    with pytest.raises(DataError, match="announces 6 images but 5"):
        load(f"celeba:{celeba_root}")
    attr.write_text("\n".join(good))
    with pytest.raises(DataError, match="target 'Bald' is not an attribute"):
        load(f"celeba:{celeba_root}", target="Bald")
    part = celeba_root / "list_eval_partition.txt"
    part.write_text("000001.jpg 0\n000002.jpg 3\n")
    with pytest.raises(DataError, match=r"list_eval_partition\.txt:2: expected 'filename 0\|1\|2'"):
        load(f"celeba:{celeba_root}")
    part.write_text("000001.jpg 0\n000009.jpg 0\n")
    with pytest.raises(DataError, match="1 image.*have no attributes.*000009"):
        load(f"celeba:{celeba_root}")
    with pytest.raises(DataError, match="no images in the test partition"):
        load(f"celeba:{celeba_root}", split="test")
    part.unlink()
    with pytest.raises(DataError, match=r"list_eval_partition\.txt: file is missing"):
        load(f"celeba:{celeba_root}")


def test_celeba_missing_image_raises_on_access(celeba_root):
    (celeba_root / "img_align_celeba" / "000005.jpg").unlink()
    data = load(f"celeba:{celeba_root}", split="test", mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(DataError, match=r"000005\.jpg: image file is missing"):
        data[0]
    with pytest.raises(DataError, match=r"000005\.jpg"):
        data.verify()
    with pytest.raises(DataError, match="img_align_celeba is missing"):
        load(f"celeba:{celeba_root / 'img_align_celeba'}")


# --- ImageNet-style validation with VOC XML ------------------------------------------------


def voc_xml(filename: str | None, size: tuple[int, int] | None, objects) -> str:
    parts = ["<annotation>", "<folder>val</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height>")
        parts.append("<depth>3</depth></size>")
    for name, (x0, y0, x1, y1) in objects:
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        )
    return "\n".join([*parts, "</annotation>"])


@pytest.fixture
def imagenet_root(tmp_path) -> Path:
    images, notes = tmp_path / "images", tmp_path / "annotations"
    notes.mkdir()
    write_image(images / "val_0001.JPEG", (200, 0, 0), size=(100, 50), fmt="JPEG")
    write_image(images / "val_0002.png", (0, 200, 0), size=(60, 80))
    write_image(images / "val_0003.png", (0, 0, 200), size=(30, 30))  # no XML: ignored
    (notes / "val_0001.xml").write_text(voc_xml("val_0001", (100, 50), [("n02", (10, 5, 59, 24))]))
    objects = [("n01", (30, 40, 44, 59)), ("n02", (0, 0, 5, 5)), ("n01", (6, 6, 11, 11))]
    (notes / "val_0002.xml").write_text(voc_xml(None, None, objects))  # size from the image
    (tmp_path / "classes.txt").write_text("n01 tench, Tinca tinca\nn02 goldfish\nn03\n")
    return tmp_path


def test_imagenet_val_boxes_scaled_and_labels(imagenet_root):
    data = load(f"imagenet-val:{imagenet_root}", size=20)
    assert data.classes == ["tench, Tinca tinca", "goldfish", "n03"]
    assert data.synsets == ["n01", "n02", "n03"]
    assert [p.name for p in data.paths] == ["val_0001.JPEG", "val_0002.png"]
    assert data.labels.tolist() == [1, 0]
    assert data.boxes.dtype == torch.int64
    # 100x50 -> 20x20: x * 0.2, y * 0.4, inclusive ends: (10,5,59,24) -> (2,2,11,9)
    # 60x80 -> 20x20: the two n01 boxes (10,10,14,14) and (2,1,3,2) give the union (2,1,14,14)
    assert data.boxes.tolist() == [[2, 2, 11, 9], [2, 1, 14, 14]]
    assert data.all_boxes[1].tolist() == [[10, 10, 14, 14], [0, 0, 1, 1], [2, 1, 3, 2]]
    assert data.all_box_labels[1].tolist() == [0, 1, 0]
    assert data.raw(1).shape == (3, 20, 20) and data.mean == (0.485, 0.456, 0.406)
    image, label = data[0]
    assert image.shape == (3, 20, 20) and label == 1
    assert data.subset([1]).all_boxes[0].shape == (3, 4)
    default = load(f"imagenet-val:{imagenet_root}", split="val")
    assert default.raw(0).shape == (3, 224, 224)
    assert default.boxes[0].tolist() == [22, 22, 134, 111]


def test_imagenet_val_folder_options_and_no_class_list(imagenet_root, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    (imagenet_root / "annotations").rename(other / "xml")
    (imagenet_root / "classes.txt").unlink()
    data = load(
        "imagenet-val", path=imagenet_root, images="images", annotations=other / "xml", size=10
    )
    assert data.classes == ["n01", "n02"] and data.labels.tolist() == [1, 0]
    one_based = load(
        "imagenet-val",
        images=imagenet_root / "images",
        annotations=other / "xml",
        size=100,
        one_based=True,
    )
    assert one_based.boxes[0].tolist() == [9, 8, 58, 47]


def test_scale_box_identity_and_bounds():
    assert scale_box([0, 0, 99, 49], (100, 50), 100) == [0, 0, 99, 99]
    assert scale_box([3, 4, 3, 4], (10, 10), 10) == [3, 4, 3, 4]
    assert scale_box([-5, -5, 500, 500], (10, 10), 20) == [0, 0, 19, 19]


def test_imagenet_val_errors(imagenet_root):
    spec = f"imagenet-val:{imagenet_root}"
    notes = imagenet_root / "annotations"
    (notes / "val_0001.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"val_0001\.xml: not a readable XML file"):
        load(spec)
    (notes / "val_0001.xml").write_text(voc_xml("val_0001", (100, 50), []))
    with pytest.raises(DataError, match=r"val_0001\.xml: no <object>"):
        load(spec)
    (notes / "val_0001.xml").write_text(voc_xml("val_0001", (100, 50), [("n09", (1, 1, 2, 2))]))
    with pytest.raises(DataError, match=r"val_0001\.xml: class 'n09' is not in .*classes\.txt"):
        load(spec)
    (notes / "val_0001.xml").write_text(voc_xml("val_0001", (100, 50), [("n01", (1, 1, 0, 2))]))
    with pytest.raises(DataError, match="xmax < xmin"):
        load(spec)
    (notes / "val_0001.xml").write_text(
        voc_xml("val_0001", (100, 50), [("n01", (1, 1, 2, 2))]).replace("<xmin>1", "<xmin>a")
    )
    with pytest.raises(DataError, match=r"<xmin> must be a number, got 'a'"):
        load(spec)
    (notes / "val_0001.xml").write_text("<voc/>")
    with pytest.raises(DataError, match="expected <annotation>"):
        load(spec)
    (notes / "val_0001.xml").write_text(voc_xml("val_0009", (1, 1), [("n01", (0, 0, 0, 0))]))
    (notes / "val_0001.xml").rename(notes / "val_0009.xml")
    with pytest.raises(DataError, match=r"val_0009\.xml: no image named val_0009\.\*"):
        load(spec)
    for f in notes.iterdir():
        f.unlink()
    with pytest.raises(DataError, match="no .xml annotation files"):
        load(spec)
    notes.rmdir()
    with pytest.raises(DataError, match="annotations folder .* does not exist"):
        load(spec)
    with pytest.raises(DataError, match="give path="):
        load("imagenet-val")

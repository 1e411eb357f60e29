"""Bring your own data: every kind ``as_dataset`` accepts gives the numbers of the
equivalent cnnlens data set, through the training loop, the analyses and a metrics workflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

import cnnlens
from cnnlens import nets
from cnnlens.analysis import collect_features
from cnnlens.data import ImageDataset, as_dataset
from cnnlens.data.base import TensorDataset
from cnnlens.data.foreign import TensorPairs
from cnnlens.errors import DataError
from cnnlens.report import ReportContext, build_report
from cnnlens.studies.decompose import (
    InfluentialFeatures,
    influential_maps,
    noise_ablation,
    relative_accuracy,
    retrain,
    sweep,
)
from cnnlens.train import TrainConfig, evaluate, fit
from cnnlens.train.loop import _batches

N, C, SIZE, K = 36, 3, 16, 3


def reference() -> TensorDataset:
    """A cnnlens data set of random uint8 images; its normalised tensors are the user's data."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, C, SIZE, SIZE), dtype=torch.uint8, generator=gen)
    labels = torch.arange(N) % K
    return TensorDataset(images, labels, classes=[str(k) for k in range(K)], name="ref")


REF = reference()
X, Y = REF.tensors()


class Items(Dataset):
    """A plain map-style data set over ``(x, y)`` that counts the items it hands out."""

    def __init__(self, x, y, *, targets: bool = False, tensor_labels: bool = False):
        self.x, self.y, self.tensor_labels, self.calls = x, y, tensor_labels, 0
        if targets:
            self.targets = y.tolist()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        self.calls += 1
        return self.x[i], (self.y[i] if self.tensor_labels else int(self.y[i]))


class Stream(IterableDataset):
    def __iter__(self):
        yield from zip(X, Y, strict=True)


KINDS = {
    "cnnlens": lambda: REF,
    "pair": lambda: (X, Y),
    "numpy-pair": lambda: (X.numpy(), Y.numpy()),
    "torch-tensordataset": lambda: torch.utils.data.TensorDataset(X, Y),
    "map-targets": lambda: Items(X, Y, targets=True),
    "map-tensor-labels": lambda: Items(X, Y, tensor_labels=True),
    "loader": lambda: DataLoader(Items(X, Y), batch_size=5, shuffle=True),
    "iterable-loader": lambda: DataLoader(Stream(), batch_size=5),
    "iterable": lambda: Stream(),
}


def model(arch: str = "resnet8") -> torch.nn.Module:
    torch.manual_seed(0)
    return nets.create(arch, num_classes=K, in_channels=C).eval()


@pytest.fixture(scope="module")
def net():
    return model()


@pytest.mark.parametrize("kind", KINDS)
def test_adapted_data_follows_the_interface(kind):
    data = as_dataset(KINDS[kind]())
    assert isinstance(data, ImageDataset)
    assert len(data) == N and data.num_classes == K and data.image_shape == (C, SIZE, SIZE)
    x, y = data.tensors()
    assert torch.equal(x, X) and torch.equal(y, Y)  # exactly as given: no round trip
    image, label = data[4]
    assert torch.equal(image, X[4]) and label == int(Y[4])
    shown = data.raw_batch(range(5))
    assert shown.shape == (5, C, SIZE, SIZE) and 0 <= shown.min() and shown.max() <= 1
    part = data.subset([7, 2, 9])
    assert len(part) == 3 and torch.equal(part.tensors()[0], X[[7, 2, 9]])
    assert part.labels.tolist() == Y[[7, 2, 9]].tolist()
    assert data.describe()["size"] == N


@pytest.mark.parametrize("kind", KINDS)
def test_influential_features_same_for_every_kind(kind, net):
    ref = InfluentialFeatures(k1=4, k2=3).fit(net, REF)
    est = InfluentialFeatures(k1=4, k2=3).fit(net, KINDS[kind]())
    assert torch.equal(est.indices_, ref.indices_)
    assert torch.equal(est.histograms_, ref.histograms_)
    assert torch.equal(est.coverage_, ref.coverage_)
    assert est.classes_ == ["0", "1", "2"]


def test_reported_case_torch_tensordataset(net):
    # issue 16: this raised TypeError: 'tuple' object is not callable
    est = InfluentialFeatures(k1=4, k2=3).fit(net, torch.utils.data.TensorDataset(X, Y))
    assert est.indices_.shape == (K, 3)


@pytest.mark.parametrize("kind", KINDS)
def test_collect_features_same_for_every_kind(kind, net):
    ref = collect_features(net, REF)
    got = collect_features(net, KINDS[kind]())
    assert torch.equal(got.features, ref.features)
    assert torch.equal(got.logits, ref.logits)
    assert torch.equal(got.labels, ref.labels)


@pytest.mark.parametrize("kind", KINDS)
def test_train_fit_same_for_every_kind(kind):
    config = TrainConfig(epochs=1, batch_size=8, augment=("flip", "crop"), seed=3)
    ref_net, net = model(), model()
    ref = fit(ref_net, REF, REF, config=config)
    got = fit(net, KINDS[kind](), KINDS[kind](), config=config)
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert got.final[key] == ref.final[key], key
    for (name, a), (_, b) in zip(
        ref_net.state_dict().items(), net.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert evaluate(net, KINDS[kind]()) == evaluate(net, REF)


@pytest.mark.parametrize("kind", ["pair", "map-targets", "loader"])
def test_metrics_workflow_same_for_every_kind(kind, net):
    options = dict(
        methods=["saliency"],
        metrics=["deletion"],
        metric_params={"deletion": {"step": 32}},
        chunk=8,
        progress=False,
    )
    ref = cnnlens.evaluate(net, X[:12], **options)
    data = as_dataset(KINDS[kind]()).subset(range(12))
    got = cnnlens.evaluate(net, data, **options)
    for method in ref.values:
        assert torch.equal(got.values[method]["deletion"], ref.values[method]["deletion"])


def test_other_analysis_entry_points_take_foreign_data(net):
    ref_est = InfluentialFeatures(k1=4, k2=3).fit(net, REF)
    pair, loader = (X, Y), DataLoader(Items(X, Y), batch_size=4)
    assert relative_accuracy(net, ref_est, pair) == relative_accuracy(net, ref_est, REF)
    assert sweep(net, pair, loader, k1s=(2, 4)) == sweep(net, REF, REF, k1s=(2, 4))
    assert noise_ablation(net, ref_est, loader) == noise_ablation(net, ref_est, REF)
    got, ref = influential_maps(net, ref_est, pair), influential_maps(net, ref_est, REF)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    config = TrainConfig(epochs=1, batch_size=12, augment=(), seed=0)
    _net, history = retrain(net, ref_est, pair, loader, config=config)
    _ref_net, ref_history = retrain(net, ref_est, REF, REF, config=config)
    assert [r["test_accuracy"] for r in history] == [r["test_accuracy"] for r in ref_history]
    assert history[1]["train_loss"] == ref_history[1]["train_loss"]


def test_report_context_adapts_its_data(net, tmp_path):
    ctx = ReportContext(net, (X, Y), Items(X, Y, targets=True), tmp_path)
    assert isinstance(ctx.train, ImageDataset) and isinstance(ctx.test, ImageDataset)
    ref = ReportContext(net, REF, REF, tmp_path)
    assert torch.equal(ctx.logits(), ref.logits())
    page = build_report(ctx, tmp_path / "report.html", only=["overview"]).read_text()
    assert "Items" in page and "This section failed" not in page


def test_map_style_data_stays_lazy_with_targets(net):
    source = Items(X, Y, targets=True)
    data = as_dataset(source)
    assert source.calls == 1  # the first item, to check it
    collect_features(net, data, indices=torch.tensor([3, 5]))
    assert source.calls <= 1 + 1 + 2  # + the probe + the two images
    part = data.subset(range(10, 14))
    assert part.labels.tolist() == Y[10:14].tolist()
    assert source.calls < N


def test_targets_found_through_a_torch_subset():
    source = Items(X, Y, targets=True)
    data = as_dataset(Subset(source, [5, 1, 8]))
    assert data.labels.tolist() == Y[[5, 1, 8]].tolist()
    assert source.calls == 1


def test_without_targets_labels_take_one_pass():
    source = Items(X, Y)
    data = as_dataset(source)
    assert data.labels.tolist() == Y.tolist()
    assert source.calls == N + 1


def test_classes_from_the_source_or_given():
    source = Items(X, Y, targets=True)
    source.classes = ["cat", "dog", "eel"]
    assert as_dataset(source).classes == ["cat", "dog", "eel"]
    assert as_dataset((X, Y), classes=5).classes == ["0", "1", "2", "3", "4"]
    assert as_dataset((X, Y), classes=["a", "b", "c"], name="mine").describe()["name"] == "mine"


def test_display_with_and_without_normalisation():
    known = as_dataset((X, Y), mean=REF.mean, std=REF.std)
    assert torch.allclose(known.raw_batch(), REF.raw_batch(), atol=1e-5)
    assert known.describe()["mean"] == list(REF.mean)
    unknown = as_dataset((X, Y))
    shown = unknown.raw_batch()
    flat = shown.flatten(1)
    assert torch.allclose(flat.min(1).values, torch.zeros(N))
    assert torch.allclose(flat.max(1).values, torch.ones(N))
    assert unknown.mean == (0.0,) * C and unknown.std == (1.0,) * C  # identity: used as given
    assert unknown.describe()["mean"] is None
    assert torch.equal(unknown.raw(3), shown[3])


def test_tensor_pairs_train_without_reading_items():
    class Counted(TensorPairs):
        reads = 0

        def __getitem__(self, index):
            Counted.reads += 1
            return super().__getitem__(index)

    data = Counted(X, Y)
    batches = list(_batches(data, data.labels, 10, torch.device("cpu"), torch.Generator()))
    assert Counted.reads == 0 and sum(len(x) for x, _ in batches) == N


@pytest.mark.parametrize(
    "obj, words",
    [
        ("shapes", ["str", "cnnlens.data.load", "DataLoader", "(x [N,C,H,W], y [N])"]),
        (X, ["Tensor", "DataLoader"]),
        ({"x": X, "y": Y}, ["dict", "DataLoader"]),
        ((X, Y, Y), ["tuple", "DataLoader"]),
        ((X, Y.tolist()), ["labels y is a list", "expected a tensor"]),
        ((X, Y[:-1]), [f"{N} images x but {N - 1} labels y"]),
        ((X[0], Y), ["[N,C,H,W]", f"({C}, {SIZE}, {SIZE})"]),
        ((X, Y.float()), ["integer tensor [N]", "torch.float32"]),
        ((X, Y[:, None]), ["integer tensor [N]", f"({N}, 1)"]),
        ((X.to(torch.uint8), Y), ["float tensor [N,C,H,W]", "torch.uint8"]),
        (torch.utils.data.TensorDataset(X, Y, Y), ["3 tensors", "expected two"]),
    ],
)
def test_wrong_objects_get_a_data_error(obj, words):
    with pytest.raises(DataError) as info:
        as_dataset(obj)
    for word in words:
        assert word in str(info.value)


def test_cnnlens_data_takes_no_options():
    with pytest.raises(DataError, match="already a cnnlens data set; classes"):
        as_dataset(REF, classes=["a", "b", "c"])


def test_labels_out_of_range_name_the_item():
    y = Y.clone()
    y[7] = 9
    with pytest.raises(DataError, match=r"label 9 of item 7 is outside \[0, 3\)"):
        as_dataset((X, y), classes=3)
    with pytest.raises(DataError, match=r"label -1 of item 7"):
        as_dataset(Items(X, torch.where(y == 9, -1, y), targets=True))
    source = Items(X, y)
    source.classes = ["a", "b", "c"]
    with pytest.raises(DataError, match=r"label 9 of item 7.*give classes="):
        as_dataset(source)


class Broken(Dataset):
    """Good items except item ``bad``, which returns ``value``."""

    def __init__(self, bad: int, value):
        self.bad, self.value = bad, value

    def __len__(self) -> int:
        return N

    def __getitem__(self, i):
        return self.value if i == self.bad else (X[i], int(Y[i]))


@pytest.mark.parametrize(
    "value, words",
    [
        ((X[5].tolist(), 1), ["item 5", "the image is a list", "float tensor [C,H,W]"]),
        ((X[5].to(torch.uint8), 1), ["item 5", "dtype torch.uint8"]),
        ((X[5, 0], 1), ["item 5", f"shape ({SIZE}, {SIZE})", "[C,H,W]"]),
        ((X[5, :, :8], 1), ["item 5", f"shape ({C}, 8, {SIZE})", "the first has"]),
        ((X[5], 1.5), ["item 5", "label is 1.5", "integer class index"]),
        ((X[5], torch.tensor([1])), ["item 5", "label is tensor([1])"]),
        ((X[5], 1, "extra"), ["item 5 is a tuple of 3 items", "pair (image, label)"]),
        (X[5], ["item 5", "pair (image, label)"]),
    ],
)
def test_bad_items_get_a_data_error_naming_the_index(value, words):
    with pytest.raises(DataError) as info:
        data = as_dataset(Broken(5, value))  # labels: one pass over the items
        data.tensors()  # images are checked as they are read
    for word in words:
        assert word in str(info.value)


def test_bad_item_found_while_training_names_it():
    source = Broken(11, (np.zeros((C, SIZE, SIZE), dtype=np.uint8), 0))
    source.targets = Y.tolist()  # lazy: item 11 is only read by the training loop
    data = as_dataset(source)
    with pytest.raises(DataError, match="Broken item 11: the image has dtype torch.uint8"):
        fit(model(), data, config=TrainConfig(epochs=1, batch_size=N, augment=()))


def test_numpy_images_are_accepted_in_items():
    source = Items(X.numpy(), Y, targets=True)
    assert torch.equal(as_dataset(source).tensors()[0], X)


class Nothing(IterableDataset):
    def __iter__(self):
        return iter(())


def test_empty_data_gets_a_data_error():
    with pytest.raises(DataError, match="tensors: the data set is empty"):
        as_dataset((X[:0], Y[:0]))
    with pytest.raises(DataError, match="Items: the data set is empty"):
        as_dataset(Items(X[:0], Y[:0]))
    with pytest.raises(DataError, match="Nothing yielded nothing"):
        as_dataset(DataLoader(Nothing(), batch_size=4))


def test_normalisation_must_be_whole():
    with pytest.raises(DataError, match="give both mean and std"):
        as_dataset((X, Y), mean=[0.5] * C)
    with pytest.raises(DataError, match=rf"one value per channel \({C}\), got 2 and 2"):
        as_dataset((X, Y), mean=[0.5] * 2, std=[0.2] * 2)

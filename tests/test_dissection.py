"""Network dissection (Bau et al. 2017): known answers on planted layers, thresholds against
torch.quantile, IoU against a direct computation, concept masks, errors."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlens.analysis import ConceptMasks, Dissection
from cnnlens.analysis.concepts.dissection import TopValues, quantile_position
from cnnlens.data import load
from cnnlens.errors import DataError, InputError, LayerError
from cnnlens.hooks import model_fingerprint, same_fingerprint


def planted(channels: int, *, pool: int = 1) -> nn.Module:
    """A classifier whose layer ``maps`` outputs its input images (``pool`` > 1: averaged over
    ``pool`` x ``pool`` cells, a coarser map), then pools them into ``channels`` logits."""
    maps = nn.AvgPool2d(pool) if pool > 1 else nn.Identity()
    return nn.Sequential(
        OrderedDict(
            maps=maps,
            relu=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            head=nn.Linear(channels, 2),
        )
    )


def squares(n: int = 64, concepts: int = 3, size: int = 32, side: int = 2, seed: int = 0):
    """Bool ``[n, concepts, size, size]``: concept k is a ``side`` x ``side`` square in about
    half the images, never overlapping another concept's square (each has its own band of
    rows). Covers about 0.2 % of all pixels per concept."""
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, concepts, size, size, dtype=torch.bool)
    band = size // concepts
    for i in range(n):
        for k in range(concepts):
            if torch.rand(1, generator=gen) < 0.5:
                y = k * band + int(torch.randint(0, band - side + 1, (1,), generator=gen))
                x = int(torch.randint(0, size - side + 1, (1,), generator=gen))
                masks[i, k, y : y + side, x : x + side] = True
    return masks


def images_of(masks: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Images whose channel k is positive exactly on concept k's mask (values in (1, 2))."""
    gen = torch.Generator().manual_seed(seed)
    return masks.float() * (1 + torch.rand(masks.shape, generator=gen))


def data_of(x: torch.Tensor):
    return x, torch.zeros(len(x), dtype=torch.long)


@pytest.mark.numerics
def test_channel_that_is_a_concept_mask_has_iou_one_with_it_and_zero_with_others():
    masks = squares()
    names = ["alpha", "beta", "gamma"]
    model = planted(3)
    before = model_fingerprint(model)
    fitted = Dissection(layers="maps", batch_size=10).fit(
        model, data_of(images_of(masks)), (masks, names)
    )
    iou = fitted.iou_["maps"]
    # the top 0.5 % of a channel that is 0 outside its concept (covering ~0.2 %) starts at 0
    assert torch.equal(fitted.thresholds_["maps"], torch.zeros(3))
    assert torch.allclose(iou, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert fitted.labels_["maps"] == names
    result = fitted.result_
    assert result["maps"].share == 1.0
    assert result.detectors() == dict.fromkeys(names, 1)
    assert same_fingerprint(before, model_fingerprint(model))


def test_shapes_masks_as_channels_are_labelled_with_their_concept():
    shapes = load("shapes", split="test", n=96)
    specs = ["class=circle", "class=star", "red", "filled=0", "object"]
    concepts = ConceptMasks.from_dataset(shapes, specs)
    x = images_of(concepts.masks(torch.arange(96)))
    # full resolution: exact. A 2x coarser map, upsampled bilinearly: T_k = 0 (every concept
    # covers under half the pixels), so M_k spreads half a cell past the concept's edge (thin
    # outlines double), and the concept is still each channel's best match by far.
    for pool in (1, 2):
        model = planted(5, pool=pool)
        fitted = Dissection(layers="maps", quantile=0.5).fit(model, data_of(x), concepts)
        iou = fitted.iou_["maps"]
        assert torch.equal(fitted.thresholds_["maps"], torch.zeros(5))
        assert fitted.labels_["maps"] == specs
        own = iou.diagonal()
        others = (iou - torch.diag(own)).max(1).values
        if pool == 1:
            assert torch.allclose(own, torch.ones(5, dtype=torch.float64))
            # a class's mask is part of the object's: IoU = its share of the object pixels
            share = concepts.masks(torch.arange(96)).sum((0, 2, 3)).double()
            assert torch.allclose(iou[0, 4], share[0] / share[4])
        else:
            assert own.min() > 0.25 and bool((own > 1.5 * others).all())


@pytest.mark.numerics
@pytest.mark.parametrize("q", [0.995, 0.9, 0.5, 0.123, 0.0, 1.0])
@pytest.mark.parametrize("batch", [1, 3, 50])
def test_thresholds_equal_torch_quantile(q, batch):
    gen = torch.Generator().manual_seed(int(q * 1000) + batch)
    x = torch.randn(20, 4, 7, 5, generator=gen)
    x[:, 1] = x[:, 1].round()  # ties
    masks = torch.rand(20, 2, 7, 5, generator=gen) > 0.7
    fitted = Dissection(layers="maps", quantile=q, batch_size=batch)
    fitted.fit(planted(4), data_of(x), masks)
    # torch.quantile of float32 values takes q (M - 1) in float32; in float64 it is exact, as
    # the dissection's is, which then interpolates in the activations' float32
    expected = torch.quantile(x.double().transpose(0, 1).flatten(1), q, dim=1)
    assert torch.allclose(fitted.thresholds_["maps"].double(), expected, rtol=1e-6, atol=1e-7)
    assert torch.allclose(
        fitted.thresholds_["maps"],
        torch.quantile(x.transpose(0, 1).flatten(1), q, dim=1),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.numerics
@pytest.mark.parametrize("cache", [True, False])
def test_iou_and_top_images_match_a_direct_computation(cache):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(30, 6, 16, 16, generator=gen)
    masks = torch.rand(30, 3, 16, 16, generator=gen) > 0.6
    fitted = Dissection(layers=["maps", "relu"], quantile=0.9, top_k=4, batch_size=7, cache=cache)
    fitted.fit(planted(6, pool=4), data_of(x), (masks, ["a", "b", "c"]))
    for layer, act in (("maps", F.avg_pool2d(x, 4)), ("relu", F.avg_pool2d(x, 4).relu())):
        t = torch.quantile(act.transpose(0, 1).flatten(1), 0.9, dim=1)
        up = F.interpolate(act, size=(16, 16), mode="bilinear", align_corners=False)
        fires = up > t[None, :, None, None]
        inter = torch.einsum("nchw,nkhw->ck", fires.double(), masks.double())
        union = fires.sum((0, 2, 3)).double()[:, None] + masks.sum((0, 2, 3)).double() - inter
        d = fitted.result_[layer]
        assert torch.allclose(d.iou, inter / union, atol=1e-12)
        assert torch.allclose(d.active, fires.double().mean((0, 2, 3)))
        scores = act.flatten(2).amax(2)  # rank_by="max"
        order = scores.T.sort(dim=1, descending=True, stable=True).indices
        assert torch.equal(d.top_images, order[:, :4])
        assert torch.equal(d.top_maps, act[d.top_images, torch.arange(6)[:, None]])


def test_rank_by_mean_orders_images_by_their_mean_activation():
    x = torch.randn(12, 2, 8, 8, generator=torch.Generator().manual_seed(5))
    masks = torch.ones(12, 1, 8, 8, dtype=torch.bool)
    d = Dissection(layers="maps", rank_by="mean", top_k=3).fit(planted(2), data_of(x), masks)
    means = x.mean((2, 3))
    order = means.T.sort(dim=1, descending=True, stable=True).indices
    assert torch.equal(d.result_["maps"].top_images, order[:, :3])


@pytest.mark.numerics
def test_top_values_keeps_the_largest_values_exactly():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(3, 1000, generator=gen)
    for k, step in ((1, 7), (37, 10), (400, 333), (1000, 1)):
        top = TopValues(3, k, values.device, values.dtype)
        for start in range(0, 1000, step):
            top.add(values[:, start : start + step])
        assert torch.equal(top.values(), values.sort(1, descending=True).values[:, :k])
    assert quantile_position(201, 0.995) == (199, pytest.approx(0.0))
    assert quantile_position(1, 0.5) == (0, 0.0)


def test_default_layers_and_concepts_on_a_resnet_and_the_result_as_json(tmp_path):
    from cnnlens import nets

    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=8).eval()
    shapes = load("shapes", split="test", n=24)
    fitted = Dissection(top_k=5).fit(model, shapes)
    result = fitted.result_
    assert fitted.layers_ == ["relu", "layer1.0", "layer2.0", "layer3.0"]
    assert result.concepts[:4] == ["object", "background", "class=circle", "class=square"]
    assert result.concepts[-10:] == shapes.attribute_names
    assert len(result.concepts) == 2 + 8 + 10
    shares = result.concept_share
    assert shares[0] + shares[1] == pytest.approx(1.0)
    assert result["layer3.0"].top_maps.shape == (64, 5, 8, 8)
    plain = result.to_dict()
    assert [layer["layer"] for layer in plain["layers"]] == fitted.layers_
    assert len(plain["layers"][1]["units"]) == 16
    assert len(result.channel_rows()) == 16 + 16 + 32 + 64
    import json

    json.dumps(plain)
    # the background concept is the complement of the object in every image
    masks = ConceptMasks.from_dataset(shapes).masks(torch.arange(24))
    assert torch.equal(masks[:, 1], ~masks[:, 0])
    assert torch.equal(masks[:, 0], shapes.masks[:, 0])


def test_concept_masks_from_ground_truth():
    shapes = load("shapes", split="test", n=40)
    masks = ConceptMasks.from_dataset(shapes, ["class=star", "striped", "striped=0"])
    got = masks.masks(torch.arange(40))
    star = shapes.labels == shapes.classes.index("star")
    striped = shapes.attributes[:, shapes.attribute_names.index("striped")]
    obj = shapes.masks[:, 0]
    assert torch.equal(got[:, 0], obj & star[:, None, None])
    assert torch.equal(got[:, 1], obj & striped[:, None, None])
    assert torch.equal(got[:, 2], obj & ~striped[:, None, None])
    mapping = ConceptMasks.from_mapping({"a": got[:, 0], "b": got[:, 1]})
    assert mapping.names == ["a", "b"] and torch.equal(mapping.masks([3, 4]), got[[3, 4], :2])


def test_errors_name_what_is_missing():
    model = planted(2)
    x = torch.rand(8, 2, 8, 8)
    # a user's data set without masks
    with pytest.raises(DataError, match="no object masks.*masks"):
        Dissection(layers="maps").fit(model, data_of(x))
    with pytest.raises(DataError, match="annotate 5 images but tensors has 8"):
        Dissection(layers="maps").fit(model, data_of(x), torch.ones(5, 1, 8, 8))
    with pytest.raises(DataError, match="2 concept masks but 3 names"):
        ConceptMasks.from_tensor(torch.ones(8, 2, 8, 8), ["a", "b", "c"])
    with pytest.raises(DataError, match="distinct"):
        ConceptMasks.from_tensor(torch.ones(8, 2, 8, 8), ["a", "a"])
    digits = load("digits", split="test", n=8) if _has_digits() else None
    if digits is not None and digits.masks is None:
        with pytest.raises(DataError, match="digits has no object masks"):
            ConceptMasks.from_dataset(digits)
    shapes = load("shapes", split="test", n=8)
    with pytest.raises(InputError, match="no attribute 'furry'"):
        ConceptMasks.from_dataset(shapes, ["furry"])
    with pytest.raises(InputError, match="concepts is empty"):
        ConceptMasks.from_dataset(shapes, [])
    with pytest.raises(DataError, match="cannot use a int as concept masks"):
        Dissection().fit(model, shapes, 3)
    masks = torch.ones(8, 1, 8, 8, dtype=torch.bool)
    with pytest.raises(LayerError, match="no layer 'nosuch'"):
        Dissection(layers="nosuch").fit(model, data_of(x), masks)
    with pytest.raises(LayerError, match="spatial map"):
        Dissection(layers="head").fit(model, data_of(x), masks)
    for bad in ({"quantile": 1.5}, {"iou_threshold": -0.1}, {"top_k": 0}, {"rank_by": "median"}):
        with pytest.raises(InputError, match=next(iter(bad))):
            Dissection(layers="maps", **bad).fit(model, data_of(x), masks)
    nan = x.clone()
    nan[3, 0, 2, 2] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        Dissection(layers="maps").fit(model, data_of(nan), masks)


def _has_digits() -> bool:
    try:
        load("digits", split="test", n=1)
    except Exception:
        return False
    return True


def test_a_layer_that_runs_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.maps = nn.Identity()
            self.head = nn.Linear(2, 2)

        def forward(self, x):
            return self.head(self.maps(self.maps(x)).mean((2, 3)))

    model = Twice()
    with pytest.raises(LayerError, match="more than once"):
        Dissection(layers="maps").fit(
            model, data_of(torch.rand(4, 2, 8, 8)), torch.ones(4, 1, 8, 8)
        )
    assert not model.maps._forward_hooks


@pytest.mark.parametrize("cache", [True, False])
def test_a_layer_output_changed_in_place_later_in_the_forward_is_read_as_the_layer_gave_it(
    cache,
):
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.maps = nn.Identity()
            self.head = nn.Linear(2, 2)

        def forward(self, x):
            out = self.maps(x)
            out += 10  # in place, on the layer's output
            return self.head(out.mean((2, 3)))

    x = torch.randn(16, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    masks = x[:, :1] > 1.5
    fitted = Dissection(layers="maps", quantile=0.9, batch_size=5, cache=cache)
    fitted.fit(InPlace(), data_of(x.clone()), masks)
    assert fitted.cached_ is cache
    expected = torch.quantile(x.transpose(0, 1).flatten(1), 0.9, dim=1)
    assert torch.allclose(fitted.thresholds_["maps"], expected, rtol=1e-5)
    # channel 0 fires exactly where it exceeds its threshold; the concept is x > 1.5 there
    assert fitted.iou_["maps"][0, 0] > 0.5


def test_report_part_shows_the_layers_and_the_strongest_detectors(tmp_path):
    from cnnlens import nets
    from cnnlens.plotting import COLUMN_PX, MIN_MAP_PX, MIN_TEXT_PX
    from cnnlens.report import ReportContext
    from cnnlens.report.sections.internals import dissection_part
    from helpers import embedded_figures

    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=8).eval()
    shapes = load("shapes", split="test", n=40)
    ctx = ReportContext(model=model, train=None, test=shapes, out=tmp_path)
    page = dissection_part(ctx, quick=True)
    assert "Network dissection" in page and "layer3.0" in page
    shown = embedded_figures(page)
    assert len(shown) in (1, 2)
    for fig in shown:
        assert fig["width"] <= COLUMN_PX and fig["text_px"] >= MIN_TEXT_PX, fig
        assert fig["map_px"] is None or fig["map_px"] >= MIN_MAP_PX, fig
    # a test set without masks: no dissection part
    plain = ReportContext(model=model, train=None, test=shapes.tensors(), out=tmp_path)
    assert dissection_part(plain, quick=True) is None

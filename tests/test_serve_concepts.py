"""The explorer's concept view through its API (issue 32, item 5): an image's top concepts
at a layer with their conditional heatmaps (CRP) and reference crops, checked against the
library's own calls; a model LRP has no rule for is refused with LRP's reason."""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the explorer needs the extra cnnlens[serve]")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from PIL import Image  # noqa: E402

from cnnlens.server import create_app  # noqa: E402
from explorer_helpers import make_run, make_store, squared_spec  # noqa: E402

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer-concepts")
    run = make_run(root)
    return run, make_store(root, run), root


@pytest.fixture(scope="module")
def run_client(folders):
    return TestClient(create_app(folders[0], images=12), base_url=BASE)


def _pixels(url: str) -> np.ndarray:
    head, data = url.split(",", 1)
    assert head == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(data)), formats=["PNG"]) as img:
        return np.asarray(img)


def test_top_concepts_are_the_library_s_crp(run_client, folders):
    import cnnlens
    from cnnlens.analysis import ReferenceImages, conditional_relevance
    from cnnlens.attribution import get as get_method
    from cnnlens.data import load
    from cnnlens.hooks import model_fingerprint, same_fingerprint
    from cnnlens.server.render import overlay

    layers = run_client.get("/api/concepts/layers").json()
    names = [entry["name"] for entry in layers["layers"]]
    assert layers["default"] == "layer3" and {"layer1", "layer2", "layer3"} <= set(names)

    served = run_client.app.state.source.holder.model
    before = model_fingerprint(served)
    out = run_client.get("/api/concepts/5?layer=layer2&top=3").json()
    assert same_fingerprint(model_fingerprint(served), before)  # left as it was
    model = cnnlens.load(folders[0])
    test = load("shapes", split="test").subset(range(12))
    x, _ = test.tensors([5])
    target = int(model(x).argmax())
    per_channel = get_method("lrp")(model, at="layer2")(x, target).raw[0].flatten(1).sum(1)
    want = [int(c) for c in per_channel.argsort(descending=True)[:3]]
    assert out["target"] == target and out["layer"] == "layer2" and out["channels"] == 32
    assert [c["channel"] for c in out["concepts"]] == want
    assert out["total"] == pytest.approx(float(per_channel.sum()), rel=1e-4)
    maps = conditional_relevance(model, x, layer="layer2", channels=want, target=target)
    refs = ReferenceImages("layer2", top=4).fit(model, test)
    image = (test.raw_batch([5])[0].permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()
    for j, concept in enumerate(out["concepts"]):
        c = concept["channel"]
        assert concept["share"] == pytest.approx(float(per_channel[c] / per_channel.sum()), 1e-4)
        assert np.array_equal(_pixels(concept["map"]), overlay(maps[0, j].numpy()))
        assert [crop["image"] for crop in concept["crops"]] == refs.image_["relevance"][c].tolist()
        for crop, box in zip(concept["crops"], refs.boxes("relevance", c), strict=True):
            top, left, bottom, right = box
            assert crop["box"] == list(box)
            whole = test.raw_batch([crop["image"]])[0].permute(1, 2, 0) * 255 + 0.5
            want_crop = whole.to(torch.uint8).numpy()[top:bottom, left:right]
            assert np.array_equal(_pixels(crop["png"]), want_crop)
    assert _pixels(out["lrp"]).shape == (*image.shape[:2], 4)


def test_default_layer_and_bad_requests(run_client):
    default = run_client.get("/api/concepts/0").json()
    assert default["layer"] == "layer3" and len(default["concepts"]) == 4
    shares = [c["relevance"] for c in default["concepts"]]
    assert shares == sorted(shares, reverse=True)
    bad = run_client.get("/api/concepts/0?layer=nope")
    assert bad.status_code == 400 and "'nope' is not a spatial layer" in bad.json()["detail"]
    assert run_client.get("/api/concepts/0?top=0").status_code == 400
    assert run_client.get("/api/concepts/12").status_code == 404


def test_a_store_shows_concepts_of_its_finished_images(folders):
    client = TestClient(create_app(folders[1]), base_url=BASE)
    out = client.get("/api/concepts/9?top=2")
    assert out.status_code == 200, out.text
    pool = {crop["image"] for c in out.json()["concepts"] for crop in c["crops"]}
    assert pool and pool <= {0, 1, 2, 3, 8, 9, 10, 11}  # only the finished shards' images
    assert client.get("/api/concepts/5").status_code == 404  # its shard is unfinished


def test_a_model_lrp_cannot_explain_is_refused_with_its_reason(folders):
    from cnnlens.attribution import get as get_method
    from cnnlens.data import load
    from cnnlens.errors import LayerError

    spec = squared_spec(folders[2])
    client = TestClient(create_app(None, model=spec, data="shapes", images=6), base_url=BASE)
    assert client.get("/api/concepts/layers").status_code == 200
    refused = client.get("/api/concepts/1")
    x, _ = load("shapes", split="test").tensors([1])
    with pytest.raises(LayerError) as reason:
        get_method("lrp")(spec.open())(x)
    assert refused.status_code == 400 and refused.json()["detail"] == str(reason.value)

"""Reference images (relevance and activation maximisation) in one streaming pass,
against brute force; receptive-field crops; the resumable Zarr writer."""

from __future__ import annotations

import json

import pytest
import torch

import cnnlens
from cnnlens.analysis.concepts.relmax import ReferenceImages, receptive_field
from cnnlens.data.base import TensorDataset
from cnnlens.errors import ConfigError, InputError
from cnnlens.hooks import capture_outputs
from cnnlens.store.references import load_references, write_references
from test_concepts_crp import plain_cnn


def dataset(n: int = 21) -> TensorDataset:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(n, 3, 16, 16, generator=gen)
    x[5] = x[2]  # a tie: the smaller index must win, whatever the batches
    return TensorDataset(x, torch.zeros(n, dtype=torch.long), classes=["a", "b", "c", "d"],
                         mean=(0, 0, 0), std=(1, 1, 1))  # fmt: skip


def brute(model, data, layer, target):
    x, _ = data.tensors()
    with torch.no_grad(), capture_outputs(model, [layer]) as out:
        model(x)
    act = out[layer].flatten(2)
    rel = cnnlens.explain(model, x, "lrp", at=layer, target=target).raw.flatten(2)
    return {"activation": act.max(2).values.T, "relevance": rel.sum(2).T}, {
        "activation": act.argmax(2).T, "relevance": rel.argmax(2).T}  # fmt: skip


@pytest.mark.parametrize("target", [None, 2])
def test_top_k_matches_brute_force(target):
    model, data = plain_cnn(), dataset()
    refs = ReferenceImages("2", top=4, target=target, batch_size=5).fit(model, data)
    values, positions = brute(model, data, "2", target)
    for ranking in ("activation", "relevance"):
        v = values[ranking].double()
        # the brute-force order: by value, ties to the smaller index
        order = torch.stack([torch.tensor(sorted(range(v.shape[1]), key=lambda i, r=r: (-r[i], i)))
                             for r in v.tolist()])[:, :4]  # fmt: skip
        assert torch.equal(refs.image_[ranking], order), ranking
        kept = v.gather(1, order).float()
        assert torch.allclose(refs.value_[ranking], kept, rtol=1e-5, atol=1e-7)
        assert torch.equal(refs.position_[ranking], positions[ranking].gather(1, order))
    # the rankings differ somewhere: relevance is not activation
    assert not torch.equal(refs.image_["activation"], refs.image_["relevance"])


def test_batches_do_not_change_the_result_and_ties_go_to_the_first_image():
    model, data = plain_cnn(), dataset()
    one = ReferenceImages("2", top=3, batch_size=1).fit(model, data)
    many = ReferenceImages("2", top=3, batch_size=8).fit(model, data)
    for r in ("activation", "relevance"):
        assert torch.equal(one.image_[r], many.image_[r])
    assert not (one.image_["activation"] == 5).any()  # 5 duplicates 2


def test_receptive_field_and_crops():
    model = plain_cnn()
    rf = receptive_field(model, "2", torch.zeros(1, 3, 16, 16))
    assert rf["box"] == (6, 6, 11, 11)  # two 3x3 convolutions: 5x5 around (8, 8)
    rf5 = receptive_field(model, "5", torch.zeros(1, 3, 16, 16))
    assert rf5["stride"] == (2.0, 2.0)
    assert rf5["box"][2] - rf5["box"][0] == 10  # 3x3, 3x3, pool 2, 3x3: 10 pixels
    refs = ReferenceImages("2", top=2, batch_size=8).fit(model, dataset())
    for (top, left, bottom, right), p in zip(
        refs.boxes("activation", 0), refs.position_["activation"][0], strict=True
    ):
        i, j = int(p) // 16, int(p) % 16
        assert top <= i < bottom and left <= j < right
        assert 0 <= top < bottom <= 16 and 0 <= left < right <= 16
    d = refs.to_dict([0, 1])
    assert len(d["channels"]) == 2 and len(d["channels"][0]["relevance"]["boxes"]) == 2


def test_writer_resumes_and_refuses_other_settings(tmp_path, monkeypatch):
    model, data = plain_cnn(), dataset()
    store = tmp_path / "refs"
    whole = ReferenceImages("2", top=3, batch_size=4).fit(model, data)
    # a pass stopped after 12 images, then resumed by the writer
    part = ReferenceImages("2", top=3, batch_size=4)
    write_references(store, model, dataset(12), part, identity={"model": "m", "data": "d"})
    manifest = json.loads((store / "references.json").read_text())
    assert manifest["meta"]["seen"] == 12
    saved = load_references(store)
    assert saved.seen_ == 12
    # resuming against the full data set is another identity (images count): refused
    with pytest.raises(ConfigError):
        write_references(store, model, data, ReferenceImages("2", top=3, batch_size=4),
                         identity={"model": "m", "data": "d"})  # fmt: skip
    # the writer over the whole data set, killed after two batches, then resumed
    store2 = tmp_path / "refs2"

    class Stop(Exception):
        pass

    original = ReferenceImages._update

    def dies_at_8(self, model_, lrp, x, index):
        if int(index[0]) >= 8:
            raise Stop
        return original(self, model_, lrp, x, index)

    monkeypatch.setattr(ReferenceImages, "_update", dies_at_8)
    with pytest.raises(Stop):
        write_references(store2, model, data, ReferenceImages("2", top=3, batch_size=4),
                         identity={"model": "m"})  # fmt: skip
    monkeypatch.undo()
    assert load_references(store2).seen_ == 8
    resumed = write_references(store2, model, data, ReferenceImages("2", top=3, batch_size=4),
                               identity={"model": "m"})  # fmt: skip
    for r in ("activation", "relevance"):
        assert torch.equal(resumed.image_[r], whole.image_[r])
    assert load_references(store2).seen_ == len(data)
    assert len(list(store2.glob("state-*.zarr"))) == 1
    with pytest.raises(ConfigError):
        write_references(store2, model, data, ReferenceImages("2", top=4),
                         identity={"model": "m"})  # fmt: skip
    with pytest.raises(InputError):
        ReferenceImages("2", top=0)

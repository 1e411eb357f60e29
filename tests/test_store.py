"""The store: write shards, read back only finished ones, refuse to mix changed jobs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import cnnlens.store
from cnnlens.errors import ConfigError, InputError
from cnnlens.store import ShardData, StoreWriter


def _job(**over):
    job = {
        "model": "m",
        "model_sha256": "ab" * 32,
        "data": "shapes",
        "n_images": 10,
        "methods": {"saliency": {}, "rise": {"n_masks": 50}},
        "metrics": ["deletion", "pointing-game"],
        "shard_size": 4,
        "dtype": "float16",
        "classes": ["a", "b"],
        "image_shape": [3, 5, 6],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
    }
    job.update(over)
    return job


def _shard(k, a, b, seed=0):
    rng = np.random.default_rng(seed + k)
    n = b - a
    images = rng.integers(0, 256, (n, 5, 6, 3), dtype=np.uint8)
    maps = {m: rng.standard_normal((n, 5, 6)).astype(np.float32) for m in ("saliency", "rise")}
    curves = {"deletion": {m: rng.random((n, 7)).astype(np.float32) for m in maps}}
    rows = [
        (i, m, metric, float(rng.random()), i % 2, (i + 1) % 2, k)
        for i in range(a, b)
        for m in maps
        for metric in ("deletion", "pointing-game")
    ]
    metrics = pd.DataFrame(rows, columns=cnnlens.store.layout.METRIC_COLUMNS)
    preds = pd.DataFrame(
        [(i, i % 2, (i + 1) % 2, 0.75, "ab"[i % 2], k) for i in range(a, b)],
        columns=cnnlens.store.layout.PREDICTION_COLUMNS,
    )
    return ShardData(a, b, images, maps, curves, {"deletion": np.linspace(0, 1, 7)}, metrics, preds)


def test_write_read_back_finished_only(tmp_path):
    path = tmp_path / "store"
    writer = StoreWriter(path, _job())
    shards = {0: (0, 4), 1: (4, 8), 2: (8, 10)}
    assert writer.pending(shards) == [0, 1, 2]
    s0, s2 = _shard(0, 0, 4), _shard(2, 8, 10)
    writer.write_shard(0, s0)
    writer.write_shard(2, s2)

    store = cnnlens.store.open(path)
    assert store.methods == ["saliency", "rise"] and store.metrics == ["deletion", "pointing-game"]
    assert store.classes == ["a", "b"] and store.n_images == 10
    assert store.finished.tolist() == [0, 1, 2, 3, 8, 9]
    assert np.array_equal(store.image(9), s2.images[1])
    got = store.maps("rise", [1, 8])
    assert got.dtype == np.float32 and got.shape == (2, 5, 6)
    want = np.stack([s0.maps["rise"][1], s2.maps["rise"][0]]).astype(np.float16)
    assert np.array_equal(got, want.astype(np.float32))
    x, y = store.curve("deletion", "saliency", 3)
    assert np.allclose(x, np.linspace(0, 1, 7)) and np.array_equal(
        y, s0.curves["deletion"]["saliency"][3]
    )
    table = store.metrics_table()
    assert list(table.columns) == cnnlens.store.layout.METRIC_COLUMNS
    assert sorted(set(table["image"])) == [0, 1, 2, 3, 8, 9] and len(table) == 6 * 4
    preds = store.predictions()
    assert preds["image"].tolist() == [0, 1, 2, 3, 8, 9] and preds["label"].tolist()[:2] == [
        "a",
        "b",
    ]
    # unfinished images are not readable
    with pytest.raises(InputError, match="image 5 is not finished"):
        store.maps("rise", [5])
    with pytest.raises(InputError, match="outside"):
        store.image(10)
    with pytest.raises(KeyError):
        store.curve("insertion", "saliency", 0)
    with pytest.raises(KeyError):
        store.curve("deletion", "saliency", 5)
    with pytest.raises(InputError, match="unknown method"):
        store.maps("lrp", [0])
    # a resumed writer knows what is finished
    assert StoreWriter(path, _job(model="moved/elsewhere")).pending(shards) == [1]
    manifest = json.loads((path / "manifest.json").read_text())
    assert sorted(manifest["shards"]) == ["0", "2"] and manifest["shards"]["2"]["start"] == 8


def test_empty_store_and_not_a_store(tmp_path):
    store = cnnlens.store.open(StoreWriter(tmp_path / "s", _job()).path)
    assert store.finished.size == 0 and store.predictions().empty
    assert list(store.metrics_table().columns) == cnnlens.store.layout.METRIC_COLUMNS
    with pytest.raises(InputError, match=str(tmp_path / "nothing")):
        cnnlens.store.open(tmp_path / "nothing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="other files"):
        StoreWriter(tmp_path / "junk", _job())


@pytest.mark.parametrize(
    "change",
    [
        {"methods": {"saliency": {}, "rise": {"n_masks": 60}}},
        {"methods": {"saliency": {}}},
        {"model_sha256": "cd" * 32},
        {"metrics": ["deletion"]},
    ],
)
def test_refuses_to_mix_changed_job(tmp_path, change):
    path = tmp_path / "store"
    StoreWriter(path, _job()).write_shard(0, _shard(0, 0, 4))
    key = next(iter(change))
    with pytest.raises(ConfigError, match=f"{key} differ"):
        StoreWriter(path, _job(**change))
    assert cnnlens.store.open(path).finished.tolist() == [0, 1, 2, 3]  # untouched
    fresh = StoreWriter(path, _job(**change), new=True)
    assert fresh.finished == {} and cnnlens.store.open(path).finished.size == 0
    assert cnnlens.store.open(path).job[key] == change[key]

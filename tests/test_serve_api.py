"""The explorer's API (cnnlens serve) through FastAPI's TestClient: every endpoint, and
every security rule: loopback, Host / Origin checks, upload size and type, no path outside
the served folder, nothing but PNG / JSON sent back."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the explorer needs the extra cnnlens[serve]")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

with warnings.catch_warnings():  # starlette's notice about httpx2; httpx is what is locked
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from PIL import Image  # noqa: E402

import cnnlens.store  # noqa: E402
from cnnlens.server import create_app  # noqa: E402
from explorer_helpers import METHODS, SECRET, make_run, make_store, png_bytes  # noqa: E402

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer")
    run = make_run(root)
    return run, make_store(root, run)


@pytest.fixture(scope="module")
def store_client(folders):
    return TestClient(create_app(folders[1], max_upload_mb=0.05), base_url=BASE)


@pytest.fixture(scope="module")
def run_client(folders):
    return TestClient(create_app(folders[0], images=6), base_url=BASE)


def _decode(content: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(content), formats=["PNG"]) as img:
        return np.asarray(img)


def test_page_and_static_files(store_client):
    page = store_client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text and "http" not in page.text.replace(BASE, "")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        r = store_client.get(f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert "://" not in r.text.replace("http://www.w3.org/2000/svg", "")  # nothing remote
    assert store_client.get("/static/index.py").status_code == 404
    assert store_client.get("/static/..%2f__init__.py").status_code == 404


def test_store_info_images_and_predictions(store_client, folders):
    store = cnnlens.store.open(folders[1])
    info = store_client.get("/api/info").json()
    assert info["kind"] == "store" and info["methods"] == METHODS
    assert info["metrics"] == ["deletion", "insertion"] and info["images"] == 8
    assert info["upload"]["available"] and "grad-cam" in info["upload"]["methods"]
    assert "iba" not in info["upload"]["methods"] and info["upload"]["max_mb"] == 0.05
    assert info["report"]["available"]  # found next to the job's model
    assert [s["key"] for s in info["report"]["sections"]] == ["overview"]
    page = store_client.get("/api/images").json()
    assert page["total"] == 8 and page["offset"] == 0
    rows = page["rows"]
    want = store.predictions().sort_values("image")
    assert [r["image"] for r in rows] == want["image"].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert [r["prediction"] for r in rows] == want["prediction"].tolist()
    assert [r["label"] for r in rows] == want["label"].tolist()
    assert all(r["predicted_label"] == store.classes[r["prediction"]] for r in rows)
    second = store_client.get("/api/images?offset=3&limit=4").json()
    assert [r["image"] for r in second["rows"]] == [3, 8, 9, 10] and second["total"] == 8
    wrong = store_client.get("/api/images?wrong=true").json()
    assert [r["image"] for r in wrong["rows"]] == [
        r["image"] for r in rows if r["prediction"] != r["target"]
    ]
    for i in (0, 9):
        r = store_client.get(f"/api/images/{i}.png")
        assert r.headers["content-type"] == "image/png"
        assert np.array_equal(_decode(r.content), store.image(i))


def test_store_maps_png_and_arrays(store_client, folders):
    store = cnnlens.store.open(folders[1])
    for method in METHODS:
        values = store_client.get(f"/api/maps/{method}/10.json").json()
        assert values["shape"] == [32, 32]
        assert np.array_equal(np.asarray(values["values"], np.float32), store.maps(method, [10])[0])
        rgba = _decode(store_client.get(f"/api/maps/{method}/10.png").content)
        assert rgba.shape == (32, 32, 4) and rgba[..., 3].std() > 5  # an overlay, not blank
    assert store_client.get("/api/maps/grad-cam/5.png").status_code == 404  # unfinished shard
    assert store_client.get("/api/maps/grad-cam/99.json").status_code == 404
    assert store_client.get("/api/maps/occlusion/0.png").status_code == 404  # not in the store
    assert store_client.get("/api/images/4.png").status_code == 404


def test_store_curves_and_metric_table(store_client, folders):
    store = cnnlens.store.open(folders[1])
    curves = store_client.get("/api/curves/8").json()
    assert sorted(curves) == ["deletion", "insertion"] and sorted(curves["deletion"]) == sorted(
        METHODS
    )
    x, y = store.curve("insertion", "saliency", 8)
    assert np.allclose(curves["insertion"]["saliency"]["x"], x)
    assert np.allclose(curves["insertion"]["saliency"]["y"], y)
    assert store_client.get("/api/curves/6").status_code == 404
    summary = store_client.get("/api/metrics").json()["summary"]
    table = store.metrics_table()
    groups = table.groupby(["method", "metric"])["value"]
    means, sds = groups.mean(), groups.std()
    assert len(summary) == 4
    for s in summary:
        key = (s["method"], s["metric"])
        assert s["images"] == 8 and s["mean"] == pytest.approx(means[key])
        assert s["ci95"] == pytest.approx(1.96 * sds[key] / 8**0.5)
    rows = store_client.get("/api/metrics/9").json()["rows"]
    mine = table[table["image"] == 9]
    assert len(rows) == len(mine) == 4
    for r in rows:
        hit = mine[(mine["method"] == r["method"]) & (mine["metric"] == r["metric"])]
        assert r["value"] == pytest.approx(float(hit["value"].iloc[0]))
    assert store_client.get("/api/metrics/5").status_code == 404


def test_a_store_whose_model_changed_does_not_explain_uploads(folders, tmp_path):
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(folders[1], copy)
    job = json.loads((copy / "job.json").read_text())
    job["model_sha256"] = "0" * 64  # as if the model had been retrained since
    (copy / "job.json").write_text(json.dumps(job))
    client = TestClient(create_app(copy), base_url=BASE)
    upload = client.get("/api/info").json()["upload"]
    assert not upload["available"] and "not the one the job used" in upload["problem"]
    image = {"image": ("a.png", png_bytes(np.zeros((32, 32, 3), np.uint8)), "image/png")}
    r = client.post("/api/explain", files=image, data={"methods": "saliency"})
    assert r.status_code == 409 and "not the one the job used" in r.json()["detail"]
    assert client.get("/api/maps/saliency/0.png").status_code == 200  # the store still reads


def test_a_store_written_by_a_job(folders, tmp_path):
    from cnnlens.jobs import JobSpec, run

    spec = JobSpec(
        model=folders[0],
        store=tmp_path / "job-store",
        images=6,
        shard_size=3,
        methods={"saliency": {}, "grad-cam": {}},
        metrics=["deletion", "pointing-game"],
        threads=1,
        compile="off",
        progress=False,
    )
    run(spec)
    store = cnnlens.store.open(tmp_path / "job-store")
    client = TestClient(create_app(store.path), base_url=BASE)
    info = client.get("/api/info").json()
    assert info["methods"] == ["saliency", "grad-cam"] and info["images"] == 6
    assert info["upload"]["available"], info["upload"]["problem"]  # the job's checksum matches
    assert info["report"]["available"]  # the run folder of the job's model has one
    got = np.asarray(client.get("/api/maps/grad-cam/4.json").json()["values"], np.float32)
    assert np.array_equal(got, store.maps("grad-cam", [4])[0])
    curves = client.get("/api/curves/4").json()
    assert list(curves) == ["deletion"]  # the pointing game has no curve
    summary = client.get("/api/metrics").json()["summary"]
    assert {(s["method"], s["metric"]) for s in summary} == {
        (m, k) for m in ("saliency", "grad-cam") for k in ("deletion", "pointing-game")
    }


def test_report_is_served_with_scripts_off(store_client):
    r = store_client.get("/report")
    assert r.status_code == 200 and "explorer test run" in r.text
    assert r.headers["content-security-policy"].startswith("sandbox")


def test_run_folder_browses_its_test_images(run_client, folders):
    import cnnlens
    from cnnlens import explain
    from cnnlens.data import load

    info = run_client.get("/api/info").json()
    assert info["kind"] == "run" and info["images"] == 6 and info["metrics"] == []
    assert "grad-cam" in info["methods"] and info["report"]["available"]
    rows = run_client.get("/api/images").json()["rows"]
    test = load("shapes", split="test")
    assert [r["target"] for r in rows] == test.labels[:6].tolist()
    model = cnnlens.load(folders[0])
    x, _ = test.tensors([3])
    with torch.no_grad():
        pred = int(model(x).argmax())
    assert rows[3]["prediction"] == pred
    got = np.asarray(run_client.get("/api/maps/saliency/3.json").json()["values"])
    want = explain(model, x, "saliency", target=pred).maps[0, 0].numpy()
    assert np.allclose(got, want, rtol=1e-5, atol=1e-7)
    assert run_client.get("/api/maps/saliency/6.png").status_code == 404
    assert run_client.get("/api/curves/0").json() == {}
    assert run_client.get("/api/metrics").json() == {"summary": []}
    assert run_client.get("/api/metrics/2").json() == {"rows": []}


@pytest.mark.parametrize(
    ("url", "status", "reason"),
    [
        ("/files/..%2Fsecret.txt", 403, "'..' leads outside"),
        ("/files/%2e%2e/secret.txt", 403, "'..' leads outside"),
        ("/files/%2E%2E%2Fsecret.txt", 403, "'..' leads outside"),
        ("/files/model/..%2f..%2fsecret.txt", 403, "'..' leads outside"),
        ("/files/notes.txt%00.png", 403, "NUL character"),
        ("/files/%00", 403, "NUL character"),
        ("/files//etc/passwd", 403, "absolute paths"),
        ("/files/%2Fetc%2Fpasswd", 403, "absolute paths"),
        ("/files/..%5Csecret.txt", 403, "backslash"),
        ("/files/leak.txt", 403, "symbolic link"),  # a symlink to the secret
        ("/files/.hidden.txt", 403, "hidden files"),
        ("/files/model/model.safetensors", 403, "files of type '.safetensors' are not served"),
        ("/files/missing.png", 404, "no file 'missing.png'"),
        ("/files/100%25.txt", 404, "no file '100%.txt'"),  # a '%' alone is a name
        ("/files/model", 404, "is a folder"),
    ],
)
def test_each_refused_path_says_why(run_client, url, status, reason):
    """Issue 28: every refusal answered 403 "backslash, NUL or encoded characters"; a
    traversal, a forbidden type and a missing file each say theirs. (Double encoding is
    tried on a real server below: the TestClient decodes a path twice.)"""
    r = run_client.get(url)
    assert r.status_code == status, (url, r.status_code, r.text)
    detail = r.json()["detail"]
    assert reason in detail and "\n" not in detail, (url, detail)
    assert SECRET not in r.text and "root:" not in r.text


def test_files_inside_are_served_and_others_are_not(run_client):
    r = run_client.get("/files/notes.txt")
    assert r.status_code == 200 and r.text.startswith("notes inside")
    assert run_client.get("/files/model/model.json").status_code == 200
    r = run_client.get("/files/report.html")
    assert r.headers["content-security-policy"].startswith("sandbox")


def _break(store, name: str, content: bytes | None) -> None:
    """Replace (or, with None, delete) one file of ``store``."""
    path = store / name
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)


def _manifest_damage(store) -> dict[str, bytes]:
    good = (store / "manifest.json").read_bytes()
    valid = json.loads(good)
    first = next(iter(valid["shards"]))
    beyond = {**valid, "shards": {first: {"start": 0, "stop": 10**6}}}
    return {
        "not JSON": b"{this is not json",
        "truncated": good[: len(good) // 2],
        "a list": b"[1, 2, 3]",
        "shards not an object": json.dumps({**valid, "shards": [0, 1]}).encode(),
        "shard without stop": json.dumps({**valid, "shards": {first: {"start": 0}}}).encode(),
        "range beyond the images": json.dumps(beyond).encode(),
    }


@pytest.mark.parametrize(
    "damage",
    [
        "not JSON",
        "truncated",
        "a list",
        "shards not an object",
        "shard without stop",
        "range beyond the images",
    ],
)
def test_a_broken_manifest_is_a_json_error_naming_it(folders, tmp_path, damage):
    """Issue 28: a broken manifest.json gave 500 with a traceback in the log. The
    TestClient re-raises any exception the app does not handle, so an answer at all
    means no traceback; every endpoint that reads the manifest names it."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(folders[1], store)
    _break(store, "manifest.json", _manifest_damage(store)[damage])
    client = TestClient(create_app(store), base_url=BASE)
    for url in (
        "/api/info",
        "/api/images",
        "/api/images/0.png",
        "/api/maps/saliency/0.json",
        "/api/curves/0",
        "/api/metrics",
        "/api/metrics/0",
    ):
        r = client.get(url)
        assert r.status_code == 500 and r.headers["content-type"] == "application/json", url
        detail = r.json()["detail"]
        assert str(store / "manifest.json") in detail and "\n" not in detail, (url, detail)
    assert client.get("/files/notes.txt").status_code == 404  # the rest still answers


def _chunk_files(folder):
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name != "zarr.json" and not p.name.startswith(".")
    )


def test_corrupt_arrays_and_tables_are_json_errors_naming_them(folders, tmp_path):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(folders[1], store)
    chunks = _chunk_files(store / "maps.zarr" / "saliency")
    assert chunks
    for chunk in chunks:
        chunk.write_bytes(chunk.read_bytes()[:7])  # truncated chunks
    (store / "curves.zarr" / "deletion" / "grad-cam" / "zarr.json").write_text("{broken")
    for table in (store / "metrics").glob("*.parquet"):
        table.write_bytes(b"PAR1 not a parquet file")
    client = TestClient(create_app(store), base_url=BASE)
    for url, file in (
        ("/api/maps/saliency/0.png", "maps.zarr/saliency"),
        ("/api/curves/0", "curves.zarr/deletion/grad-cam"),
        ("/api/metrics", "metrics/shard-"),
        ("/api/metrics/0", "metrics/shard-"),
    ):
        r = client.get(url)
        assert r.status_code == 500, (url, r.status_code, r.text)
        assert str(store / file) in r.json()["detail"], (url, r.json())
    assert client.get("/api/maps/grad-cam/0.png").status_code == 200  # the sound parts read


def test_a_broken_or_missing_job_json_is_named_at_start(folders, tmp_path):
    import shutil

    from cnnlens.errors import InputError, StoreError

    store = tmp_path / "store"
    shutil.copytree(folders[1], store)
    _break(store, "job.json", b'{"methods": ')
    with pytest.raises(StoreError, match=r"job\.json is not a readable store job\.json"):
        create_app(store)
    _break(store, "job.json", json.dumps({"methods": ["saliency"], "metrics": []}).encode())
    with pytest.raises(StoreError, match=r"job\.json lacks 'n_images'"):
        create_app(store)
    _break(store, "job.json", None)
    with pytest.raises(InputError, match="neither a run folder .* nor a store"):
        create_app(store)


def test_upload_is_explained_like_the_library_does(store_client, folders):
    import cnnlens
    from cnnlens import explain
    from cnnlens.data import load

    test = load("shapes", split="test")
    pixels = (test.raw_batch([20])[0].permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()
    r = store_client.post(
        "/api/explain",
        files={"image": ("shape.png", png_bytes(pixels), "image/png")},
        data={"methods": "grad-cam,saliency", "arrays": "true"},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert sorted(out["maps"]) == ["grad-cam", "saliency"] and out["errors"] == {}
    model = cnnlens.load(folders[0])
    x = test.normalize(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert out["target"] == int(probs.argmax())
    assert out["top"][0]["probability"] == pytest.approx(float(probs.max()), rel=1e-4)
    for method in ("grad-cam", "saliency"):
        want = explain(model, x, method, target=out["target"]).maps[0, 0].numpy()
        got = np.asarray(out["maps"][method]["values"])
        assert np.allclose(got, want, rtol=1e-4, atol=1e-6 * float(np.abs(want).max()))
        assert out["maps"][method]["png"].startswith("data:image/png;base64,")


def test_jpeg_of_another_size_is_resized(store_client):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    r = store_client.post(
        "/api/explain",
        files={"image": ("photo.jpg", buffer.getvalue(), "image/jpeg")},
        data={"methods": "saliency"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["width"], r.json()["height"]) == (32, 32)
    assert _decode(__import__("base64").b64decode(r.json()["image"].split(",")[1])).shape == (
        32,
        32,
        3,
    )


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "payload, word",
    [
        (b"#!/bin/sh\necho not an image\n", "not a PNG or JPEG"),
        (_gif(), "not a PNG or JPEG"),  # Pillow reads GIF, the explorer does not take it
        (png_bytes(np.zeros((32, 32, 3), np.uint8))[:60], "damaged"),  # truncated PNG
    ],
)
def test_upload_that_is_not_a_png_or_jpeg_is_refused(store_client, payload, word):
    r = store_client.post(
        "/api/explain",
        files={"image": ("fake.png", payload, "image/png")},
        data={"methods": "saliency"},
    )
    assert r.status_code == 400 and word in r.json()["detail"]


def test_decompression_bomb_is_refused(run_client):
    buffer = io.BytesIO()
    Image.new("L", (7000, 7000)).save(buffer, "PNG")  # 49 M pixels in ~50 KB
    r = run_client.post(
        "/api/explain",
        files={"image": ("bomb.png", buffer.getvalue(), "image/png")},
        data={"methods": "saliency"},
    )
    assert r.status_code == 400 and "7000x7000" in r.json()["detail"]


def test_upload_methods_are_checked(store_client):
    image = {"image": ("a.png", png_bytes(np.zeros((32, 32, 3), np.uint8)), "image/png")}
    too_many = ",".join(["saliency", "grad-cam", "lrp", "rise", "cam", "lime", "occlusion"] * 2)
    for methods in ("nonsense", "iba", "saliency,bad", " , ", too_many + ",deeplift,deconvnet"):
        r = store_client.post("/api/explain", files=image, data={"methods": methods})
        assert r.status_code == 400 and "methods must be" in r.json()["detail"]


def test_upload_over_the_limit_is_refused_before_reading(store_client):
    rng = np.random.default_rng(1)
    big = png_bytes(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8))  # ~120 KB > 50 KB
    r = store_client.post("/api/explain", files={"image": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "0.05 MB" in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams, cut off at the limit
        yield (
            b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
        )
        for _ in range(64):
            yield b"x" * 16384

    r = store_client.post(
        "/api/explain",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413


def test_host_and_origin_are_checked(store_client):
    assert store_client.get("/api/info", headers={"host": "evil.example"}).status_code == 400
    assert store_client.get("/api/info", headers={"host": "localhost:8765"}).status_code == 200
    assert store_client.get("/api/info", headers={"host": "[::1]:8765"}).status_code == 200
    for host in ("127.0.0.1.evil.example", "localhost.evil.example:8765", "[::2]:80", ""):
        assert store_client.get("/", headers={"host": host}).status_code == 400, host
    image = {"image": ("a.png", png_bytes(np.zeros((32, 32, 3), np.uint8)), "image/png")}
    r = store_client.post(
        "/api/explain",
        files=image,
        data={"methods": "saliency"},
        headers={"origin": "http://evil.example"},
    )
    assert r.status_code == 403 and "cross-origin" in r.json()["detail"]


def test_serve_refuses_a_remote_host_without_the_flag(tmp_path, capsys):
    from cnnlens.cli import main
    from cnnlens.server.runner import check_host, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert check_host("0.0.0.0", allow_remote=True) is False
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --host 0.0.0.0") and "--allow-remote" in err
    assert main(["serve", str(tmp_path)]) == 2
    assert "neither a run folder" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_remote_host_with_the_flag_prints_a_warning(folders):
    import os
    import subprocess
    import sys

    port = _free_port()
    env = {**os.environ, "CNNLENS_QUIET": "0"}
    command = [sys.executable, "-m", "cnnlens.cli", "serve", str(folders[0]), "--host",
               "0.0.0.0", "--allow-remote", "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = [proc.stderr.readline() for _ in range(2)]  # warning, then the address
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert lines[0].startswith("warning: serving on 0.0.0.0, reachable from other machines")
    assert f"http://0.0.0.0:{port}/" in lines[1]


def test_missing_extra_is_named(monkeypatch, folders):
    import sys

    from cnnlens.errors import ConfigError

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"cnnlens\[serve\]"):
        create_app(folders[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_rejects_a_large_body_unread_and_raw_traversal(folders):
    import uvicorn

    app = create_app(folders[0], max_upload_mb=1)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started

        def raw(request: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                s.sendall(request)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                    if b"\r\n\r\n" in data and data.split(b"\r\n\r\n", 1)[1].strip().endswith(b"}"):
                        break
                return data

        # 500 MB announced, not one byte of it sent: the answer comes anyway
        reply = raw(
            b"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data;"
            b" boundary=x\r\nContent-Length: 500000000\r\n\r\n"
        )
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        for path in (b"/files/../secret.txt", b"/files/model/../../secret.txt"):
            reply = raw(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert reply.split(b" ")[1] in (b"403", b"404") and SECRET.encode() not in reply
            status = json.loads(reply.split(b"\r\n\r\n", 1)[1])
            assert "detail" in status
        for path, reason in (
            (b"/files/%252e%252e%252fsecret.txt", "URL-encoded twice"),
            (b"/files/notes%252etxt", "URL-encoded twice"),
            (b"/files/%2e%2e/secret.txt", "'..' leads outside"),
            (b"/files/notes.txt%00", "NUL character"),
        ):
            reply = raw(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 403"), (path, reply[:300])
            assert reason in json.loads(reply.split(b"\r\n\r\n", 1)[1])["detail"], reply
    finally:
        server.should_exit = True
        thread.join(timeout=10)

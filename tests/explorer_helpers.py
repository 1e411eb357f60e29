"""A run folder and a store for the explorer's tests (not tests themselves).

The run folder holds a saved ResNet-8 (untrained, seeded), a one-section report and,
for the traversal tests, a symlink that points at a file outside it. The store is written
through :class:`cnnlens.store.StoreWriter` with real maps (``cnnlens.explain``) and real
deletion / insertion curves of that model on shapes test images; its middle shard is
left unfinished, as in a job still running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

SECRET = "top secret outside the run folder"
METHODS = ["saliency", "grad-cam"]
METRICS = ["deletion", "insertion"]
SHARD = 4
N_IMAGES = 12
FINISHED_SHARDS = (0, 2)


def make_run(root: Path) -> Path:
    from cnnlens import checkpoint, nets
    from cnnlens.data import load
    from cnnlens.report import ReportContext, build_report

    torch.manual_seed(0)
    test = load("shapes", split="test").subset(range(N_IMAGES))
    model = nets.create("resnet8", num_classes=test.num_classes, in_channels=3).eval()
    run = root / "run"
    checkpoint.save(
        model,
        run / "model",
        classes=test.classes,
        mean=test.mean,
        std=test.std,
        input_shape=test.image_shape,
        extra={"data": "shapes"},
    )
    ctx = ReportContext(model=model, train=None, test=test, out=run, title="explorer test run")
    build_report(ctx, run / "report.html", only=["overview"])
    (run / "notes.txt").write_text("notes inside the run folder\n")
    (root / "secret.txt").write_text(SECRET + "\n")
    (run / "leak.txt").symlink_to(root / "secret.txt")
    return run


def make_store(root: Path, run: Path) -> Path:
    import cnnlens
    from cnnlens import explain
    from cnnlens.data import load
    from cnnlens.jobs.spec import model_checksum
    from cnnlens.metrics.causal import deletion, insertion
    from cnnlens.store import ShardData, StoreWriter
    from cnnlens.store.layout import METRIC_COLUMNS, PREDICTION_COLUMNS

    model = cnnlens.load(run / "model")
    test = load("shapes", split="test").subset(range(N_IMAGES))
    job = {
        "model": str(run / "model"),
        "model_sha256": model_checksum(model),
        "data": "shapes",
        "n_images": N_IMAGES,
        "methods": {m: {} for m in METHODS},
        "metrics": METRICS,
        "shard_size": SHARD,
        "dtype": "float16",
        "classes": test.classes,
        "image_shape": list(test.image_shape),
        "mean": list(test.mean),
        "std": list(test.std),
    }
    writer = StoreWriter(root / "store", job)
    for k in FINISHED_SHARDS:
        a, b = k * SHARD, (k + 1) * SHARD
        x, labels = test.tensors(range(a, b))
        with torch.no_grad():
            probs = model(x).softmax(1)
        pred = probs.argmax(1)
        images = (test.raw_batch(range(a, b)).permute(0, 2, 3, 1) * 255 + 0.5).to(torch.uint8)
        maps, curves, xs, rows = {}, {}, {}, []
        for method in METHODS:
            e = explain(model, x, method, target=pred)
            maps[method] = e.maps[:, 0].numpy()
            for metric, fn in (("deletion", deletion), ("insertion", insertion)):
                result = fn(model, x, e.maps, pred)
                curves.setdefault(metric, {})[method] = result.curves.numpy()
                xs[metric] = result.x.numpy()
                rows += [
                    (
                        a + j,
                        method,
                        metric,
                        float(result.values[j]),
                        int(labels[j]),
                        int(pred[j]),
                        k,
                    )
                    for j in range(b - a)
                ]
        predictions = pd.DataFrame(
            [
                (
                    a + j,
                    int(labels[j]),
                    int(pred[j]),
                    float(probs[j, pred[j]]),
                    test.classes[int(labels[j])],
                    k,
                )
                for j in range(b - a)
            ],
            columns=PREDICTION_COLUMNS,
        )
        writer.write_shard(
            k,
            ShardData(
                a,
                b,
                images.numpy(),
                maps,
                curves,
                xs,
                pd.DataFrame(rows, columns=METRIC_COLUMNS),
                predictions,
            ),
        )
    return root / "store"


def png_bytes(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class Squared(torch.nn.Module):
    """A classifier with a product of two activations (``h * h``): LRP has no rule for it,
    so the explorer's concept view must refuse it."""

    def __init__(self, classes: int = 8) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.head(self.conv2(h * h).mean((2, 3)))


def squared_spec(root: Path):
    """A model spec (``explorer_helpers:Squared`` with a weights file and the shapes card)
    for the explorer's ``--model`` path, opened on ``shapes``."""
    from cnnlens.data import load
    from cnnlens.loading.spec import ModelSpec

    test = load("shapes", split="test", n=4)
    torch.manual_seed(0)
    torch.save(Squared(len(test.classes)).state_dict(), root / "squared.pt")
    (root / "classes.txt").write_text("\n".join(test.classes) + "\n")
    card = {"weights": root / "squared.pt", "classes": root / "classes.txt",
            "input": ",".join(map(str, test.image_shape)), "mean": list(test.mean),
            "std": list(test.std)}  # fmt: skip
    return ModelSpec.from_fields("explorer_helpers:Squared", card)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def served(app):
    """The explorer ``app`` served by uvicorn on a free local port, in a thread; yields its URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)  # the server's own start-up, not the page: pages are awaited by tests
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def chromium_browser():
    """Debian's chromium driven by Playwright (skips the test where either is missing)."""
    import pytest

    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser tests need playwright"
    )
    if CHROMIUM is None:
        pytest.skip(
            "no chromium on this machine: install Debian's chromium (make browser) to run the "
            "explorer's browser tests"
        )
    with sync_api.sync_playwright() as p:
        # Chromium's own sandbox cannot start as root (CI containers): only then is it off
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield chromium
        chromium.close()

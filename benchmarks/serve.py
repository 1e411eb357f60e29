"""What the explorer adds to an explanation: an upload explained through the API against
``cnnlens.explain`` on the same input, and the time to serve a map already computed.

    python benchmarks/serve.py [--methods saliency,grad-cam,integrated-gradients]
                               [--threads 1] [--rounds 5]

A ResNet-20 (random weights with BatchNorm statistics as after training) is saved as a
run folder for ``shapes`` in a temporary folder and served by ``cnnlens.server.create_app``
through FastAPI's TestClient (in process: no network). Per method: the best of
``--rounds`` of the direct call (the floor) and of ``POST /api/explain`` with a 32x32 PNG
(decode, resize, predict, explain, PNG and JSON encoding), their difference and ratio;
then ``GET /api/images/{i}.png`` and a cached ``/api/maps/{method}/{i}.png``. Not a test:
it prints a table. Run it on an idle machine and say which load it ran under.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from attribution import benchmark_model


def best_of(rounds: int, fn) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--methods", default="saliency,grad-cam,integrated-gradients")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from cnnlens import checkpoint, explain
    from cnnlens.data import load
    from cnnlens.server import create_app
    from cnnlens.server.upload import decode_image, to_input

    test = load("shapes", split="test")
    model = benchmark_model("resnet20")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        checkpoint.save(
            model, run / "model", classes=[str(k) for k in range(10)], mean=test.mean,
            std=test.std, input_shape=test.image_shape, extra={"data": "shapes"},
        )  # fmt: skip
        client = TestClient(create_app(run, images=8), base_url="http://127.0.0.1")
        raw = (test.raw_batch([0])[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(raw).save(buffer, format="PNG")
        png = buffer.getvalue()
        x = to_input(decode_image(png, channels=3, size=(32, 32)), test.mean, test.std)
        served = client.app.state.source.holder.model
        print("| method | explain (s) | POST /api/explain (s) | added (ms) | ratio |")
        print("|---|---|---|---|---|")
        for method in args.methods.split(","):
            target = int(served(x).argmax())

            def direct(method=method, target=target):
                explain(served, x, method, target=target)

            def upload(method=method):
                r = client.post(
                    "/api/explain",
                    files={"image": ("x.png", png, "image/png")},
                    data={"methods": method},
                )
                assert r.status_code == 200, r.text

            direct(), upload()  # warm-up
            floor, through = best_of(args.rounds, direct), best_of(args.rounds, upload)
            print(
                f"| {method} | {floor:.4f} | {through:.4f} | {1e3 * (through - floor):.1f} "
                f"| {through / floor:.2f} |"
            )
        method = args.methods.split(",")[0]
        client.get(f"/api/maps/{method}/1.png")  # computed once, then cached
        image = best_of(args.rounds, lambda: client.get("/api/images/1.png"))
        cached = best_of(args.rounds, lambda: client.get(f"/api/maps/{method}/1.png"))
        print(f"\nGET /api/images/1.png: {1e3 * image:.1f} ms; cached map: {1e3 * cached:.1f} ms")


if __name__ == "__main__":
    main()

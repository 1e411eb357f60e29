"""One shard of a job: explain its images with every method and score every metric.

The same code runs in every engine (in the driver, in a local worker process, in
a Ray actor): :class:`ShardWorker` holds the model once and turns a shard's image
range into a :class:`~cnnlens.store.ShardData`. Explaining and scoring reuse
:mod:`cnnlens.metrics.evaluate` (the method functions, the metrics and their
settings), so a job's numbers are those of ``cnnlens evaluate``.

A shard's result depends only on the job and the shard's images, never on which
worker ran it or what ran before, so a resumed job equals an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import torch

from ..store import ShardData
from ..store.layout import METRIC_COLUMNS, PREDICTION_COLUMNS


class ShardWorker:
    """Explain and score shards of ``job`` (a ``job.json`` dict) on ``model`` / ``dataset``."""

    def __init__(self, model: torch.nn.Module, dataset, job: dict) -> None:
        from ..metrics.evaluate import _method_fn, with_memory

        self.model = model.eval()
        self.dataset = dataset
        self.job = job
        self.fns = {
            name: _method_fn(name, with_memory(name, params, job.get("memory")), job["seed"])
            for name, params in job["methods"].items()
        }
        self.mean = torch.tensor(job["mean"]).view(1, -1, 1, 1)
        self.std = torch.tensor(job["std"]).view(1, -1, 1, 1)

    def compute(self, k: int, start: int, stop: int) -> ShardData:
        """Shard ``k`` (images ``start:stop``) as the store writes it."""
        if not self.job.get("compile"):
            return self._compute(k, start, stop)
        from ..accel import compiled_forward

        with compiled_forward(self.model):
            return self._compute(k, start, stop)

    def _compute(self, k: int, start: int, stop: int) -> ShardData:
        import pandas as pd

        from ..attribution.base import check_inputs
        from ..hooks import frozen
        from ..metrics.evaluate import score_explanation
        from ..placement import model_device

        job, data = self.job, self.dataset
        idx = list(range(start, stop))
        x, labels = data.tensors(idx)
        device = model_device(self.model)
        x = check_inputs(x).to(device)
        boxes = None if data.boxes is None else data.boxes[start:stop]
        masks = None if data.masks is None else data.masks[start:stop].to(device)
        with frozen(self.model), torch.no_grad():
            logits = self.model(x).float()
        floor = model_pass_seconds(self.model, x)
        prob, pred = torch.softmax(logits, 1).max(1)
        pred, prob = pred.cpu(), prob.cpu()
        classes = job["classes"]
        predictions = pd.DataFrame(
            {
                "image": np.asarray(idx, dtype=np.int64),
                "target": labels.numpy().astype(np.int64),
                "prediction": pred.numpy().astype(np.int64),
                "probability": prob.numpy().astype(np.float64),
                "label": [
                    classes[int(t)] if 0 <= int(t) < len(classes) else str(int(t)) for t in labels
                ],
                "shard": np.full(len(idx), k, dtype=np.int64),
            },
            columns=PREDICTION_COLUMNS,
        )
        maps, curves, curve_x, rows, seconds, scoring = {}, {}, {}, [], {}, {}
        for method, fn in self.fns.items():
            t0 = time.perf_counter()
            expl = fn(self.model, x, pred.to(device))
            m = expl.maps if hasattr(expl, "maps") else expl
            maps[method] = m.detach().float().cpu()[:, 0].numpy()
            seconds[method] = time.perf_counter() - t0
            t0 = time.perf_counter()
            out, xs = score_explanation(
                self.model,
                x,
                method,
                fn,
                expl,
                pred.to(device),
                job["metrics"],
                boxes=boxes,
                masks=masks,
                sanity_rows=max(0, job["sanity_images"] - start),
                batch_size=job["batch_size"],
                memory=job.get("memory"),
                seed=job["seed"],
                metric_params=job["metric_params"],
            )
            scoring[method] = time.perf_counter() - t0
            for key, value in out.items():
                metric, kind = key.split("/", 1)
                if kind == "values":
                    rows.append(
                        pd.DataFrame(
                            {
                                "image": np.asarray(idx, dtype=np.int64),
                                "method": method,
                                "metric": metric,
                                "value": value.double().numpy(),
                                "target": labels.numpy().astype(np.int64),
                                "prediction": pred.numpy().astype(np.int64),
                                "shard": np.full(len(idx), k, dtype=np.int64),
                            },
                            columns=METRIC_COLUMNS,
                        )
                    )
                elif kind.startswith("curve"):  # curve, curve_<part>; steps when no x
                    name = metric if kind == "curve" else f"{metric}-{kind[6:]}"
                    curves.setdefault(name, {})[method] = value.numpy()
                    steps = xs[metric] if metric in xs else torch.arange(value.shape[1])
                    curve_x[name] = steps.numpy()
        metrics = (
            pd.concat(rows, ignore_index=True)
            if rows
            else pd.DataFrame({c: [] for c in METRIC_COLUMNS})
        )
        display = (x.cpu() * self.std + self.mean).clamp(0, 1)
        images = (display * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return ShardData(
            start=start,
            stop=stop,
            images=images,
            maps=maps,
            curves=curves,
            curve_x=curve_x,
            metrics=metrics,
            predictions=predictions,
            info={"seconds": seconds, "score_seconds": scoring, "floor_seconds": floor},
        )


def model_pass_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Seconds of one forward+backward pass of ``model`` over ``x`` (to the input): the
    unit of the summary's "multiple of the model-pass floor" (DESIGN.md, performance)."""
    from ..hooks import frozen

    v = x.detach().clone().requires_grad_(True)
    with frozen(model):
        t0 = time.perf_counter()
        model(v).max(1).values.sum().backward()
    return time.perf_counter() - t0


def to_bytes(data: ShardData) -> bytes:
    """A shard's result as bytes (NumPy ``.npz`` without pickle, tables as Parquet),
    to pass it from a worker to the driver that writes the store."""
    arrays = {"images": data.images}
    for method, m in data.maps.items():
        arrays[f"maps/{method}"] = m
    for metric, per in data.curves.items():
        arrays[f"x/{metric}"] = np.asarray(data.curve_x[metric])
        for method, y in per.items():
            arrays[f"curves/{metric}/{method}"] = y
    for name in ("metrics", "predictions"):
        buf = io.BytesIO()
        getattr(data, name).to_parquet(buf, index=False)
        arrays[f"table/{name}"] = np.frombuffer(buf.getvalue(), dtype=np.uint8)
    head = {"start": data.start, "stop": data.stop, "info": data.info}
    arrays["head"] = np.frombuffer(json.dumps(head).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def from_bytes(blob: bytes) -> ShardData:
    """The inverse of :func:`to_bytes`."""
    import pandas as pd

    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    head = json.loads(arrays.pop("head").tobytes())
    maps, curves, curve_x, tables = {}, {}, {}, {}
    for key, value in arrays.items():
        kind, _, rest = key.partition("/")
        if kind == "maps":
            maps[rest] = value
        elif kind == "x":
            curve_x[rest] = value
        elif kind == "curves":
            metric, method = rest.split("/", 1)
            curves.setdefault(metric, {})[method] = value
        elif kind == "table":
            tables[rest] = pd.read_parquet(io.BytesIO(value.tobytes()))
    return ShardData(
        start=head["start"],
        stop=head["stop"],
        images=arrays["images"],
        maps=maps,
        curves=curves,
        curve_x=curve_x,
        metrics=tables["metrics"],
        predictions=tables["predictions"],
        info=head["info"],
    )

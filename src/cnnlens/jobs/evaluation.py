"""A job's store read back as an :class:`~cnnlens.metrics.evaluate.Evaluation`.

``cnnlens evaluate --out OUT`` runs its explain + score work as a job into ``OUT/store``
(resumable shard by shard: the store's manifest names what is finished) and writes its
tables and curve plots from this; the numbers are the job's, image by image.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..metrics.evaluate import Evaluation, sanity_verdicts


def evaluation(path: str | Path) -> Evaluation:
    """The finished images of the store at ``path``: per method and metric their values
    (``values[method][metric]`` ``[n]``, in image order), the curves, and the
    randomisation verdicts, with the job's settings as ``params``."""
    from .. import store as store_module

    store = store_module.open(path)
    images = [int(i) for i in store.finished]
    job = store.job
    result = Evaluation(
        images=images,
        params={
            "metrics": store.metrics,
            "method_params": {m: p for m, p in job["methods"].items() if p},
            "metric_params": job.get("metric_params", {}),
            "chunk": job.get("shard_size"),
            "sanity_images": job.get("sanity_images"),
            "seed": job.get("seed"),
            "images": images,
            "methods": store.methods,
        },
    )
    table = store.metrics_table().sort_values("image", kind="stable")
    for method in store.methods:
        rows = table[table["method"] == method]
        result.values[method] = {
            metric: torch.tensor(group["value"].to_numpy(dtype="float32"))
            for metric, group in rows.groupby("metric", sort=False)
        }
        result.curves[method] = {}
    for name, methods in store.curve_names().items():
        for method in methods:
            if method in result.curves:
                result.curves[method][name] = torch.from_numpy(store.curves(name, method)[1])
    result.sanity_fails = sanity_verdicts(result.values)
    return result

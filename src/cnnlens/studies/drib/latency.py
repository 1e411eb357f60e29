"""Wall-clock latency of the ungated, dense-masked gated and sparse models (issue 19).

Each model runs the same batch under ``torch.inference_mode``; after
``warmup`` calls, ``repeats`` calls are timed one by one and the median is
reported (milliseconds per batch), so one slow call on a shared machine
does not decide. The variants are interleaved call by call, so a change of
machine load hits all of them alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from ...accel import fold_batchnorm
from ...errors import ConfigError
from .gate import gate
from .sparse import sparse_model


def variants(base: nn.Module, gated: nn.Module, probe: torch.Tensor) -> dict[str, nn.Module]:
    """The models to time: ungated, ungated with BN folded, the ungated model run by the
    sparse path's own code with every channel (one mask of ones: the same Python and
    BN folding, no savings; what the sparse path's speed is due to its code alone), the
    gated model dense with multiplication by the mask, and the sparse path."""
    folded, _ = fold_batchnorm(base.eval(), probe)
    layers = [tuple(spec) for spec in gated.drib["layers"]]
    same_code = sparse_model(gate(base, masks=1, layers=layers, links=gated.drib["links"]))
    return {
        "ungated": base.eval(),
        "ungated (BN folded)": folded,
        "ungated (sparse code, all channels)": same_code,
        "gated, dense x mask": gated.eval(),
        "gated, sparse": sparse_model(gated),
    }


def median_ms(
    models: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    x: torch.Tensor,
    *,
    repeats: int = 20,
    warmup: int = 3,
) -> dict[str, float]:
    """Median milliseconds per call of each model on ``x`` (interleaved calls)."""
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in models.values():
                fn(x)
        for _ in range(repeats):
            for name, fn in models.items():
                t0 = time.perf_counter()
                fn(x)
                times[name].append(1000 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def latency_table(
    base: nn.Module,
    gated: nn.Module,
    images: torch.Tensor,
    *,
    batches: tuple[int, ...] = (1, 64),
    repeats: int = 20,
) -> list[dict]:
    """One row per batch size: median ms of each variant (images reused cyclically)."""
    models = variants(base, gated, images[:1])
    rows = []
    for b in batches:
        idx = torch.arange(b) % len(images)
        ms = median_ms(models, images[idx], repeats=repeats)
        rows.append({"batch": b, **{f"{k} (ms)": v for k, v in ms.items()}})
    return rows

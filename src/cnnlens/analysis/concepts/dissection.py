"""Network dissection (Bau et al. 2017, CVPR): which channels detect which human concepts.

The survey (paper 001, section 3.2, ref. 47) lists Network Dissection among the
semantic explanations of a network's internal representation. For each channel k of
a layer, its activation ``a_k(x)`` over every image x and position of the data set
gives a threshold ``T_k`` with ``P(a_k > T_k) = 1 - quantile`` (the top 0.5 % for the
default ``quantile = 0.995``). The activation map, upsampled bilinearly to the size of
the concept annotations, thresholded at ``T_k``, is the channel's segmentation
``M_k(x) = S_k(x) > T_k``; its agreement with concept c's mask ``L_c(x)`` over the data
set is (Bau et al. Eq. 1)

    IoU_{k,c} = sum_x |M_k(x) & L_c(x)| / sum_x |M_k(x) | L_c(x)|.

A channel is a detector of its best concept if that IoU exceeds ``iou_threshold``
(0.04 in Bau et al.); the share of such channels is the layer's interpretability.
Concepts come from :mod:`.concept_masks` (``shapes``' object masks, classes and
attributes, or a user's masks).

Two passes over the data, as Bau et al.: the first finds the thresholds, the second
the intersections and unions. The threshold is the exact quantile (torch.quantile's
linear interpolation) of all ``N x H x W`` values of the channel, computed in the
first pass without holding them: only the largest ``1 - quantile`` share of each
channel's values (plus one) can matter, and a running top set keeps exactly those
(0.5 % of the activations; more for a smaller ``quantile``). ``M_k`` uses ``>``, as
NetDissect's code: at a ReLU channel that is positive at fewer than 0.5 % of the
positions ``T_k = 0`` and the segmentation is where it fires, not every pixel.

Chunks of images run through :mod:`cnnlens.chunking`, layer outputs are read by
hooks of :mod:`cnnlens.hooks` as each layer runs (an in-place operation after the
layer cannot change them), every count accumulates on the model's device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...chunking import chunk_size, memory_budget, run_chunked
from ...data.adapt import as_dataset
from ...errors import InputError, LayerError
from ...hooks import HookSet, frozen
from ...layers import get_layer
from ...placement import placement
from ..running import run_model
from ..similarity.layer_similarity import default_layers
from .concept_masks import ConceptMasks, as_concept_masks

QUANTILE = 0.995  # Bau et al.: the top 0.5 % of a unit's activations
IOU_THRESHOLD = 0.04  # Bau et al.: a unit with IoU above this detects the concept
RANK_BY = ("max", "mean")


@dataclass(frozen=True, eq=False)
class LayerDissection:
    """The dissection of one layer's ``C`` channels against ``concepts``.

    ``thresholds`` ``[C]`` (T_k), ``iou`` float64 ``[C, len(concepts)]``, ``active``
    ``[C]`` (share of the pixels in ``M_k``, after upsampling), ``top_images`` long
    ``[C, k]`` (the images with the largest activation, by ``rank_by``) with their
    ``top_scores`` and activation maps ``top_maps`` ``[C, k, h, w]`` (the layer's own
    resolution). All on the CPU.
    """

    layer: str
    concepts: list[str]
    iou_threshold: float
    thresholds: torch.Tensor
    iou: torch.Tensor
    active: torch.Tensor
    top_images: torch.Tensor
    top_scores: torch.Tensor
    top_maps: torch.Tensor

    @property
    def channels(self) -> int:
        return int(self.iou.shape[0])

    @property
    def best(self) -> torch.Tensor:
        """Index of each channel's best concept, long ``[C]`` (the first of ties)."""
        return self.iou.argmax(1)

    @property
    def best_iou(self) -> torch.Tensor:
        return self.iou.max(1).values

    @property
    def interpretable(self) -> torch.Tensor:
        """Bool ``[C]``: the best IoU exceeds ``iou_threshold``."""
        return self.best_iou > self.iou_threshold

    @property
    def labels(self) -> list[str | None]:
        """Each channel's concept, None where no IoU passes the threshold."""
        ok = self.interpretable.tolist()
        return [self.concepts[b] if o else None for b, o in zip(self.best.tolist(), ok)]

    @property
    def share(self) -> float:
        """Share of interpretable channels."""
        return float(self.interpretable.double().mean())

    def detectors(self) -> dict[str, int]:
        """Number of detector channels of each concept (every concept, 0 included)."""
        counts = dict.fromkeys(self.concepts, 0)
        for label in self.labels:
            if label is not None:
                counts[label] += 1
        return counts


@dataclass(frozen=True, eq=False)
class DissectionResult:
    """Every dissected layer (``layers``, in the order they run) and how they were dissected.

    ``concept_share`` ``[len(concepts)]``: share of all annotated pixels in each concept's
    masks; ``image_size``: the ``(H, W)`` the maps were upsampled to.
    """

    layers: list[LayerDissection]
    concepts: list[str]
    concept_share: torch.Tensor
    quantile: float
    iou_threshold: float
    rank_by: str
    n_images: int
    image_size: tuple[int, int]

    def __getitem__(self, layer: str) -> LayerDissection:
        for found in self.layers:
            if found.layer == layer:
                return found
        raise LayerError(f"layer {layer!r} was not dissected; dissected: {self.names}")

    @property
    def names(self) -> list[str]:
        return [d.layer for d in self.layers]

    def summary(self) -> list[dict]:
        """One row per layer: channels, interpretable channels and share, concepts detected."""
        rows = []
        for d in self.layers:
            found = {c: k for c, k in d.detectors().items() if k}
            top = sorted(found.items(), key=lambda item: (-item[1], item[0]))
            rows.append(
                {
                    "layer": d.layer,
                    "channels": d.channels,
                    "interpretable": int(d.interpretable.sum()),
                    "share": d.share,
                    "concepts": len(found),
                    "detectors": ", ".join(f"{c} {k}" for c, k in top),
                }
            )
        return rows

    def detectors(self) -> dict[str, int]:
        """Detector channels of each concept over every dissected layer."""
        total = dict.fromkeys(self.concepts, 0)
        for d in self.layers:
            for concept, count in d.detectors().items():
                total[concept] += count
        return total

    def strongest(self, count: int, *, labelled: bool = True) -> list[tuple[str, int]]:
        """Up to ``count`` channels ``(layer, channel)`` by best IoU, highest first: the best
        channel of each concept, then the others (only detectors if ``labelled``)."""
        units = sorted(
            (
                (-float(d.best_iou[c]), order, c, int(d.best[c]))
                for order, d in enumerate(self.layers)
                for c in range(d.channels)
                if not labelled or bool(d.interpretable[c])
            ),
        )
        seen: set[int] = set()
        first, rest = [], []
        for unit in units:
            (rest if unit[3] in seen else first).append(unit)
            seen.add(unit[3])
        return [(self.layers[u[1]].layer, u[2]) for u in (first + rest)[:count]]

    def channel_rows(self) -> list[dict]:
        """One row per channel of every layer (for a CSV)."""
        rows = []
        for d in self.layers:
            best, best_iou, labels = d.best.tolist(), d.best_iou.tolist(), d.labels
            for k in range(d.channels):
                rows.append(
                    {
                        "layer": d.layer,
                        "channel": k,
                        "label": labels[k] or "",
                        "best_concept": self.concepts[best[k]],
                        "iou": best_iou[k],
                        "threshold": float(d.thresholds[k]),
                        "active_share": float(d.active[k]),
                        "top_images": " ".join(str(i) for i in d.top_images[k].tolist()),
                    }
                )
        return rows

    def to_dict(self) -> dict:
        """Plain values, for JSON: settings, per-layer summaries, every channel, every IoU."""
        layers = []
        for d, row in zip(self.layers, self.summary(), strict=True):
            best, labels = d.best.tolist(), d.labels
            units = [
                {
                    "channel": k,
                    "label": labels[k],
                    "best_concept": self.concepts[best[k]],
                    "iou": float(d.best_iou[k]),
                    "threshold": float(d.thresholds[k]),
                    "active_share": float(d.active[k]),
                    "top_images": d.top_images[k].tolist(),
                    "top_scores": d.top_scores[k].tolist(),
                }
                for k in range(d.channels)
            ]
            layers.append(
                {
                    **{key: row[key] for key in ("layer", "channels", "interpretable", "share")},
                    "detectors": {c: n for c, n in d.detectors().items() if n},
                    "units": units,
                    "iou": d.iou.tolist(),
                }
            )
        return {
            "method": "network dissection (Bau et al. 2017)",
            "quantile": self.quantile,
            "iou_threshold": self.iou_threshold,
            "rank_by": self.rank_by,
            "n_images": self.n_images,
            "image_size": list(self.image_size),
            "concepts": list(self.concepts),
            "concept_share": self.concept_share.tolist(),
            "detectors": self.detectors(),
            "layers": layers,
        }


class Dissection:
    """Network dissection (Bau et al. 2017) of ``layers``, scikit-learn style.

    ``Dissection().fit(model, data)`` dissects every block of the model
    (:func:`~.layer_similarity.default_layers`; any layer names work) against the
    concepts of ``data``'s ground truth (:meth:`.ConceptMasks.from_dataset`), or
    ``fit(model, data, concepts)`` against the concepts given (see
    :func:`~.concept_masks.as_concept_masks`). ``quantile``: T_k is this quantile of the
    channel's activations; ``iou_threshold``: a channel whose best IoU exceeds it is a
    detector; ``top_k`` images per channel ranked by their ``rank_by`` (``"max"`` or
    ``"mean"``) activation. ``cache``: keep the layers' outputs from the first pass for
    the second instead of running the model again; None (default) keeps them when
    they fit a quarter of the device's memory budget
    (:func:`~cnnlens.chunking.memory_budget`; 820 MB for the ten blocks of ResNet-20
    on 2,000 images of 32 x 32).

    Learned attributes: ``result_`` (:class:`DissectionResult`), ``layers_``,
    ``concepts_``, ``thresholds_`` / ``iou_`` / ``labels_`` (``{layer: ...}``),
    ``cached_`` (whether the second pass read kept outputs). The model's state is
    left as found.
    """

    def __init__(
        self,
        layers: str | Sequence[str] | None = None,
        *,
        quantile: float = QUANTILE,
        iou_threshold: float = IOU_THRESHOLD,
        top_k: int = 8,
        rank_by: str = "max",
        batch_size: int | None = None,
        cache: bool | None = None,
    ) -> None:
        self.layers = layers
        self.quantile = quantile
        self.iou_threshold = iou_threshold
        self.top_k = top_k
        self.rank_by = rank_by
        self.batch_size = batch_size
        self.cache = cache

    def fit(
        self, model: nn.Module, data: object, concepts: object = None, *, desc: str | None = None
    ) -> Dissection:
        """Dissect ``model`` on the images of ``data`` (anything
        :func:`~cnnlens.data.as_dataset` accepts); ``desc`` shows progress bars."""
        self._check_params()
        data = as_dataset(data)
        masks = as_concept_masks(concepts, data)
        device, dtype = placement(model)
        n = len(data)
        with frozen(model):
            probe = data.tensors(torch.arange(1))[0].to(device, dtype)
            names = self._layer_names(model, probe)
            size = chunk_size(model, probe, backward=False, batch_size=self.batch_size)
            cache = self._caches(model, probe, names, n)
            tallies = [_Tally(name, self.quantile, n, masks.size, cache) for name in names]
            scores = self._first_pass(model, data, tallies, size, desc)
            first = 0
            for t in tallies:  # each gave [max, mean] of its channels, [N, 2C]
                columns = scores[:, first : first + 2 * t.channels]
                first += 2 * t.channels
                t.finish_thresholds(columns, min(self.top_k, n), self.rank_by)
            pixels = self._second_pass(model, data, masks, tallies, size, cache, desc)
        total = float(n * masks.size[0] * masks.size[1])
        layers = [t.result(masks.names, self.iou_threshold, pixels, total) for t in tallies]
        self.result_ = DissectionResult(
            layers,
            list(masks.names),
            (pixels / total).cpu().double(),
            float(self.quantile),
            float(self.iou_threshold),
            self.rank_by,
            n,
            tuple(masks.size),
        )
        self.layers_ = list(names)
        self.concepts_ = list(masks.names)
        self.thresholds_ = {d.layer: d.thresholds for d in layers}
        self.iou_ = {d.layer: d.iou for d in layers}
        self.labels_ = {d.layer: d.labels for d in layers}
        self.cached_ = cache
        return self

    # --- the two passes -------------------------------------------------
    def _first_pass(self, model, data, tallies, size, desc) -> torch.Tensor:
        """Thresholds: each tally sees its layer's output of every chunk as the layer runs.
        Returns the per-image ``[N, sum 2C]`` max and mean of every channel."""
        device, dtype = placement(model)
        with HookSet() as hooks:
            for t in tallies:
                hooks.forward(get_layer(model, t.name), t.hook)

            def run(start: int, stop: int) -> torch.Tensor:
                x = data.tensors(torch.arange(start, stop))[0].to(device, dtype)
                for t in tallies:
                    t.begin(start, stop)
                with torch.no_grad():
                    run_model(model, x)
                return torch.cat([t.end(type(model).__name__) for t in tallies], 1)

            return run_chunked(run, len(data), size, desc=_label(desc, "thresholds"))

    def _second_pass(self, model, data, masks, tallies, size, cache, desc) -> torch.Tensor:
        """Intersections and unions, from the kept outputs or a second forward of every
        chunk. Returns the pixels of each concept over the data set."""
        device, dtype = placement(model)
        concepts = len(masks.names)
        pixels = torch.zeros(concepts, device=device, dtype=_accumulator(device))

        def labels(start: int, stop: int) -> torch.Tensor:
            """``[b, P, K + 1]`` float: the concepts' masks, then a mask of every pixel (its
            intersection with ``M_k`` counts the pixels of ``M_k``)."""
            b = stop - start
            found = masks.masks(torch.arange(start, stop)).to(device)
            _check_mask_shape(found, masks, b)
            flat = found.flatten(2)
            pixels.add_(flat.sum((0, 2)).to(pixels.dtype))
            out = torch.ones(b, flat.shape[2], concepts + 1, device=device)
            out[:, :, :concepts] = flat.transpose(1, 2)
            return out

        with contextlib.ExitStack() as stack:
            hooks = stack.enter_context(HookSet())
            if not cache:
                for t in tallies:
                    hooks.forward(get_layer(model, t.name), t.hook)

            def run(start: int, stop: int) -> torch.Tensor:
                found = labels(start, stop)
                for t in tallies:
                    t.begin(start, stop, found)
                if cache:
                    for t in tallies:
                        t.hook(None, None, t.kept.pop(0))
                else:
                    x = data.tensors(torch.arange(start, stop))[0].to(device, dtype)
                    with torch.no_grad():
                        run_model(model, x)
                return torch.cat([t.end(type(model).__name__) for t in tallies], 1)

            run_chunked(run, len(data), size, desc=_label(desc, "IoU"))
        return pixels

    # --- helpers ------------------------------------------------------
    def _caches(self, model: nn.Module, probe: torch.Tensor, names: list[str], n: int) -> bool:
        """Whether to keep the layers' outputs between the passes (``cache``; None: if every
        output of the ``n`` images fits a quarter of the memory budget)."""
        if self.cache is not None:
            return bool(self.cache)
        sizes: list[int] = []
        with HookSet() as hooks:
            for name in names:
                hooks.forward(
                    get_layer(model, name),
                    lambda _m, _i, out: sizes.append(
                        out[:1].numel() * out.element_size() if isinstance(out, torch.Tensor) else 0
                    ),
                )
            with torch.no_grad():
                run_model(model, probe[:1])
        return n * sum(sizes) <= memory_budget(probe.device) // 4

    def _layer_names(self, model: nn.Module, probe: torch.Tensor) -> list[str]:
        if self.layers is None:
            return default_layers(model, probe)
        names = [self.layers] if isinstance(self.layers, str) else list(self.layers)
        if not names:
            raise InputError("layers is empty; name at least one layer or pass None")
        if len(set(names)) != len(names):
            raise InputError(f"layers must be distinct, got {names}")
        for name in names:
            get_layer(model, name)
        return names

    def _check_params(self) -> None:
        q = self.quantile
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0 <= q <= 1:
            raise InputError(f"quantile must be a number in [0, 1], got {q!r}")
        t = self.iou_threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t < 1:
            raise InputError(f"iou_threshold must be a number in [0, 1), got {t!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise InputError(f"top_k must be a positive integer, got {self.top_k!r}")
        if self.rank_by not in RANK_BY:
            raise InputError(f"rank_by must be one of {RANK_BY}, got {self.rank_by!r}")
        if self.cache not in (None, True, False):
            raise InputError(f"cache must be None, True or False, got {self.cache!r}")


def quantile_position(count: int, q: float) -> tuple[int, float]:
    """torch.quantile's linear interpolation among ``count`` sorted values: the value at
    ascending index ``lo`` and the next, weighted ``frac`` (``q (count - 1) = lo + frac``)."""
    pos = q * (count - 1)
    lo = min(int(math.floor(pos)), count - 1)
    return lo, pos - lo


class TopValues:
    """The ``k`` largest values of each of ``C`` rows, exactly, from values given in parts.

    Values not above the current k-th largest cannot enter, so after the first parts
    only a few of each part are kept; the kept candidates are cut back to ``k`` when
    they grow past ``2 k``.
    """

    def __init__(self, rows: int, k: int, device: torch.device, dtype: torch.dtype) -> None:
        self.k = k
        self.parts: list[torch.Tensor] = []
        self.held = 0
        self.cut = torch.full((rows,), -math.inf, device=device, dtype=dtype)
        self.full = False

    def add(self, values: torch.Tensor) -> None:
        """Offer ``values`` ``[C, m]``."""
        m = values.shape[1]
        if self.full:
            above = int((values > self.cut[:, None]).sum(1).max())
            if above == 0:
                return
            if above < m:
                values = values.topk(above, dim=1, sorted=False).values
        self.parts.append(values)
        self.held += values.shape[1]
        if self.held >= 2 * self.k:
            self._compact()

    def _compact(self) -> None:
        values = torch.cat(self.parts, 1) if len(self.parts) > 1 else self.parts[0]
        if values.shape[1] > self.k:
            values = values.topk(self.k, dim=1, sorted=False).values
        self.parts, self.held = [values], values.shape[1]
        if self.held == self.k:
            self.cut, self.full = values.min(1).values, True

    def values(self) -> torch.Tensor:
        """The kept values ``[C, min(k, offered)]``, each row in descending order."""
        self._compact()
        return self.parts[0].sort(dim=1, descending=True).values


class _Tally:
    """What one layer accumulates: its thresholds and top images (first pass), then its
    intersections with every concept and its top images' maps (second pass)."""

    def __init__(self, name: str, quantile: float, n: int, size, keep: bool) -> None:
        self.name, self.quantile, self.n, self.size, self.keep = name, quantile, n, size, keep
        self.channels = 0
        self.top: TopValues | None = None
        self.kept: list[torch.Tensor] = []
        self.intersection: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None

    # --- called by the passes ------------------------------------------
    def begin(self, start: int, stop: int, labels: torch.Tensor | None = None) -> None:
        self.start, self.stop, self.labels = start, stop, labels
        self.calls, self.out = 0, None

    def end(self, model_name: str) -> torch.Tensor:
        if self.calls == 0:
            raise LayerError(f"layer {self.name!r} of {model_name} did not run in its forward")
        out, self.out, self.labels = self.out, None, None
        return out

    def hook(self, _module, _inputs, output) -> None:
        self.calls += 1
        if self.calls > 1:
            raise LayerError(
                f"layer {self.name!r} runs more than once per forward; dissection needs a "
                "layer that runs once"
            )
        a = self._checked(output)
        if self.labels is None:
            self._first(a)
        else:
            self._second(a)

    def _checked(self, output: object) -> torch.Tensor:
        b = self.stop - self.start
        if not isinstance(output, torch.Tensor) or output.dim() != 4 or output.shape[0] != b:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise LayerError(
                f"layer {self.name!r} gives {shape}; dissection needs a spatial map "
                f"[N, C, H, W] with N = {b} images"
            )
        if not output.is_floating_point():
            raise LayerError(f"layer {self.name!r} gives {output.dtype} values; expected floats")
        return output.detach()

    # --- first pass: thresholds ---------------------------------------
    def _first(self, a: torch.Tensor) -> None:
        b, c, h, w = a.shape
        if self.top is None:
            self.channels, self.map_size = c, (h, w)
            self.count = self.n * h * w
            self.lo, self.frac = quantile_position(self.count, self.quantile)
            self.top = TopValues(c, self.count - self.lo, a.device, a.dtype)
        elif (c, h, w) != (self.channels, *self.map_size):
            raise LayerError(
                f"layer {self.name!r} gave [{self.channels}, {self.map_size}] maps, then "
                f"{[c, h, w]}; give images of one size"
            )
        flat = a.flatten(2)
        mean = flat.mean(2)
        if not bool(torch.isfinite(mean).all()):  # a NaN or an infinity makes its mean one
            raise InputError(
                f"layer {self.name!r} gives NaN or infinite activations on images "
                f"[{self.start}, {self.stop})"
            )
        self.top.add(a.transpose(0, 1).reshape(c, -1))
        if self.keep:  # a copy: an in-place operation after the layer may change ``a``
            self.kept.append(a.clone())
        self.out = torch.cat([flat.amax(2), mean], 1)  # [b, 2C]: rank_by max / mean

    def finish_thresholds(self, scores: torch.Tensor, k: int, rank_by: str) -> None:
        """T_k from the kept values; the ``k`` images of each channel with the largest
        ``rank_by`` activation (``scores`` ``[N, 2C]``: max, then mean), ties to the first."""
        top = self.top.values()  # [C, count - lo], descending
        below = top[:, -1]  # ascending index lo
        above = top[:, -2] if top.shape[1] > 1 else below  # ascending index lo + 1
        self.thresholds = torch.lerp(below, above, torch.full_like(below, self.frac))
        self.top = None
        ranked = scores.reshape(len(scores), 2, self.channels)[:, RANK_BY.index(rank_by)]
        order = torch.sort(ranked.T, dim=1, descending=True, stable=True)
        self.k = k
        self.top_images = order.indices[:, :k]
        self.top_scores = order.values[:, :k]

    # --- second pass: IoU ----------------------------------------------
    def _second(self, a: torch.Tensor) -> None:
        b, c, h, w = a.shape
        labels = self.labels  # [b, P, K + 1]
        if self.intersection is None:
            acc = _accumulator(a.device)
            self.intersection = torch.zeros(c, labels.shape[2], device=a.device, dtype=acc)
            self.maps = torch.zeros(c, self.k, h, w, device=a.device, dtype=a.dtype)
        per_image = []
        step = _images_per_step(c, self.size, a)
        for i in range(0, b, step):
            fires = self._segment(a[i : i + step])  # [s, C, P], 1 inside M_k
            counts = torch.bmm(fires, labels[i : i + step])  # [s, C, K + 1], exact integers
            self.intersection += counts.sum(0).to(self.intersection.dtype)
            per_image.append(counts[:, :, -1])
        inside = (self.top_images >= self.start) & (self.top_images < self.stop)
        rows, slots = inside.nonzero(as_tuple=True)
        if rows.numel():
            self.maps[rows, slots] = a[self.top_images[rows, slots] - self.start, rows]
        self.out = torch.cat(per_image)  # [b, C]: pixels of M_k(x)

    def _segment(self, part: torch.Tensor) -> torch.Tensor:
        """``M_k`` of images ``part`` ``[s, C, h, w]``: float ``[s, C, P]``, 1 where the map,
        upsampled bilinearly to the concepts' size, exceeds ``T_k``.

        Upsampled in channels-last memory and compared straight into a float tensor: on the
        project's 2-core Xeon (busy), ``[64, 64, 8, 8]`` to 32 x 32 took 6.9 ms against 65 ms
        channels-first, and the comparison 2.9 ms against 28 ms through a bool tensor (best
        of 15). The ``[s, P, C]`` result is returned transposed, a view."""
        s, c, h, w = part.shape
        pixels = self.size[0] * self.size[1]
        if (h, w) == tuple(self.size):
            fires = torch.empty(s, c, pixels, device=part.device)
            return torch.gt(part.flatten(2), self.thresholds[:, None], out=fires)
        last = part.contiguous(memory_format=torch.channels_last)
        up = F.interpolate(last, size=self.size, mode="bilinear", align_corners=False)
        values = up.permute(0, 2, 3, 1).reshape(s, pixels, c)  # a view when channels-last
        fires = torch.empty(s, pixels, c, device=part.device)
        return torch.gt(values, self.thresholds, out=fires).transpose(1, 2)

    def result(
        self, concepts: list[str], iou_threshold: float, pixels: torch.Tensor, total: float
    ) -> LayerDissection:
        inter, active = self.intersection[:, :-1], self.intersection[:, -1]
        union = active[:, None] + pixels.to(inter.dtype)[None, :] - inter
        iou = torch.where(union > 0, inter / union.clamp_min(1), 0.0)
        return LayerDissection(
            self.name,
            list(concepts),
            float(iou_threshold),
            self.thresholds.cpu(),
            iou.cpu().double(),
            (active / total).cpu().double(),
            self.top_images.cpu(),
            self.top_scores.cpu(),
            self.maps.cpu(),
        )


def _label(desc: str | None, what: str) -> str | None:
    return None if desc is None else f"{desc}: {what}"


def _accumulator(device: torch.device) -> torch.dtype:
    """Counts summed over the data set: float64 (exact to 2**53 pixels), float32 on MPS."""
    return torch.float32 if device.type == "mps" else torch.float64


def _images_per_step(channels: int, size: tuple[int, int], a: torch.Tensor) -> int:
    """Images whose upsampled maps (and their float segmentation) fit a quarter of the
    memory budget at once."""
    per_image = channels * size[0] * size[1] * (a.element_size() + 4)
    return max(1, int(memory_budget(a.device) // 4 // max(per_image, 1)))


def _check_mask_shape(labels: torch.Tensor, masks: ConceptMasks, b: int) -> None:
    expected = (b, len(masks.names), *masks.size)
    if tuple(labels.shape) != expected:
        raise InputError(f"concept masks of a batch are {tuple(labels.shape)}, not {expected}")


__all__ = ["Dissection", "DissectionResult", "LayerDissection", "TopValues", "quantile_position"]

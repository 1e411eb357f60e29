"""Reference images of a layer's channels: relevance maximisation beside activation
maximisation, in one streaming pass over a data set.

Achtibat et al. 2023 (CRP, section "relevance maximization"): the images that show
what a channel *is used for* are those where the channel carries the most relevance
for the prediction (here: the LRP relevance of the layer's output summed over the
channel's positions, for a class or each image's predicted class), beside the
classic images where it *fires* most (the maximum of its activation map). Both
rankings, their values and the position of each image's maximum are kept as a
running top-k (``[C, k]`` per ranking), so the pass stores no maps: memory does not
grow with the data set. Each entry has a crop: the receptive field of the unit at
its maximum (:func:`receptive_field`), clipped to the image.

:class:`ReferenceImages` is resumable: ``state()`` is everything it has seen
(``seen_`` images), ``ReferenceImages.from_state`` picks it up again, and ``fit(...,
start=)`` continues from an image; :mod:`cnnlens.store.references` writes it to Zarr.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...attribution import get as get_method
from ...chunking import chunk_size
from ...data import as_dataset
from ...errors import InputError, LayerError
from ...gradmode import with_autograd
from ...hooks import capture_outputs, frozen
from ...layers import get_layer
from ...placement import placement

RANKINGS = ("activation", "relevance")


@with_autograd
def receptive_field(model: nn.Module, layer: str, probe: torch.Tensor, draws: int = 4) -> dict:
    """The input box each unit of ``layer`` sees, measured: the support of the gradient
    of the centre unit (all channels summed) over ``draws`` seeded random inputs the shape
    of ``probe`` ``[1,C,H,W]`` (union of supports, so dead ReLUs of one draw do not shrink
    it). Returns ``{"box": (top, left, bottom, right)`` of the centre unit (exclusive
    ends), ``"centre": (i, j)``, ``"stride": (sh, sw)`` (input pixels per output
    position)}``; the box of unit ``(i', j')`` is the centre box shifted by the stride."""
    gen = torch.Generator().manual_seed(0)
    support = torch.zeros(probe.shape[-2:], dtype=torch.bool)
    with frozen(model):
        for _ in range(draws):
            x = torch.randn(probe.shape, generator=gen).to(probe).requires_grad_(True)
            with capture_outputs(model, [layer]) as out:
                model(x)
            a = out[layer]
            if a.dim() != 4:
                raise LayerError(f"layer {layer!r} gives {tuple(a.shape)}; needs [N,C,H,W]")
            h, w = a.shape[-2:]
            centre = (h // 2, w // 2)
            (g,) = torch.autograd.grad(a[0, :, centre[0], centre[1]].sum(), x)
            support |= (g[0].abs().sum(0) > 0).cpu()
    rows, cols = support.any(1).nonzero()[:, 0], support.any(0).nonzero()[:, 0]
    if not len(rows):
        rows, cols = torch.arange(probe.shape[-2]), torch.arange(probe.shape[-1])
    box = (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
    stride = (probe.shape[-2] / h, probe.shape[-1] / w)
    return {"box": box, "centre": centre, "stride": stride, "size": (h, w)}


def crop_box(rf: dict, i: int, j: int, image: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box (top, left, bottom, right) unit ``(i, j)`` of the layer sees, clipped."""
    top, left, bottom, right = rf["box"]
    di = round((i - rf["centre"][0]) * rf["stride"][0])
    dj = round((j - rf["centre"][1]) * rf["stride"][1])
    top, bottom = max(0, top + di), min(image[0], bottom + di)
    left, right = max(0, left + dj), min(image[1], right + dj)
    return top, left, max(bottom, top + 1), max(right, left + 1)


class _Top:
    """A running top-k of ``C`` rows of (value, image, position): ties go to the
    smaller image index, so the result does not depend on the batches."""

    def __init__(self, channels: int, k: int) -> None:
        self.value = torch.full((channels, 0), -torch.inf, dtype=torch.float64)
        self.image = torch.zeros((channels, 0), dtype=torch.long)
        self.position = torch.zeros((channels, 0), dtype=torch.long)
        self.k = k

    def add(self, value: torch.Tensor, image: torch.Tensor, position: torch.Tensor) -> None:
        """``value``/``position`` ``[B, C]`` for images ``image`` ``[B]``."""
        c = self.value.shape[0]
        v = torch.cat([self.value, value.T.double().cpu()], 1)
        i = torch.cat([self.image, image[None].expand(c, -1).cpu()], 1)
        p = torch.cat([self.position, position.T.cpu()], 1)
        by_index = i.argsort(dim=1, stable=True)
        v, i, p = v.gather(1, by_index), i.gather(1, by_index), p.gather(1, by_index)
        order = (-v).argsort(dim=1, stable=True)[:, : self.k]
        self.value, self.image, self.position = (
            v.gather(1, order),
            i.gather(1, order),
            p.gather(1, order),
        )


class ReferenceImages:
    """Top-``top`` data-set images of every channel of ``layer`` by relevance and by
    activation (see the module docstring), estimator style.

    ``target``: the class whose relevance ranks images (None: each image's predicted
    class); ``composite`` / ``epsilon``: LRP's; ``batch_size``: images per streamed
    batch (None: the chunk size for a backward within the memory budget).

    Learned attributes: ``value_`` / ``image_`` / ``position_`` (``{ranking: [C, top]}``,
    ranking ``"activation"`` or ``"relevance"``; ``position_`` is the flat index ``i * w
    + j`` of the maximum in the layer's ``h x w`` map), ``channels_``, ``seen_``,
    ``receptive_field_``, ``image_shape_``.
    """

    def __init__(
        self,
        layer: str,
        *,
        top: int = 8,
        target: int | None = None,
        composite: Any = "epsilon-plus",
        epsilon: float = 1e-6,
        batch_size: int | None = None,
    ) -> None:
        if not isinstance(top, int) or isinstance(top, bool) or top < 1:
            raise InputError(f"top must be a positive integer, got {top!r}")
        if target is not None and (not isinstance(target, int) or isinstance(target, bool)):
            raise InputError(f"target must be a class index or None, got {target!r}")
        self.layer, self.top, self.target = layer, top, target
        self.composite, self.epsilon, self.batch_size = composite, epsilon, batch_size
        self.seen_ = 0
        self._tops: dict[str, _Top] | None = None

    # --- the pass ------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        data: object,
        *,
        start: int = 0,
        stop: int | None = None,
        on_batch: Callable[[ReferenceImages], None] | None = None,
    ) -> ReferenceImages:
        """Stream images ``[start, stop)`` of ``data`` (default: from where a resumed
        state stopped to the end) in batches; ``on_batch(self)`` after each one (a
        writer's checkpoint)."""
        data = as_dataset(data)
        device, dtype = placement(model)
        get_layer(model, self.layer)
        stop = len(data) if stop is None else stop
        start = max(start, self.seen_)
        if not 0 <= start <= stop <= len(data):
            raise InputError(f"images {start}:{stop} outside the data set's {len(data)}")
        lrp = get_method("lrp")(
            model, composite=self.composite, epsilon=self.epsilon, at=self.layer
        )
        with frozen(model):
            probe = data.tensors([0])[0].to(device, dtype)
            if self._tops is None:
                self.receptive_field_ = receptive_field(model, self.layer, probe)
                self.image_shape_ = tuple(int(s) for s in probe.shape[1:])
            size = self.batch_size or chunk_size(model, probe, backward=True)
            for lo in range(start, stop, size):
                hi = min(lo + size, stop)
                x = data.tensors(torch.arange(lo, hi))[0].to(device, dtype)
                self._update(model, lrp, x, torch.arange(lo, hi))
                self.seen_ = hi
                if on_batch is not None:
                    on_batch(self)
        return self

    def _update(self, model, lrp, x: torch.Tensor, index: torch.Tensor) -> None:
        with torch.no_grad(), capture_outputs(model, [self.layer]) as out:
            model(x)
        act = out[self.layer]
        if act.dim() != 4:
            raise LayerError(
                f"layer {self.layer!r} gives {tuple(act.shape)}; reference images need a "
                "layer with [N,C,H,W] outputs (a convolutional stage)"
            )
        rel = lrp(x, self.target).raw  # [B, C, h, w]: the relevance at the layer
        if self._tops is None:
            self.channels_ = int(act.shape[1])
            self._tops = {r: _Top(self.channels_, self.top) for r in RANKINGS}
        a_val, a_pos = act.flatten(2).max(2)
        r_flat = rel.flatten(2)
        self._tops["activation"].add(a_val, index, a_pos)
        self._tops["relevance"].add(r_flat.sum(2), index, r_flat.argmax(2))

    # --- results -------------------------------------------------------
    def _check(self) -> None:
        if self._tops is None:
            raise InputError("ReferenceImages has seen no images yet; call fit first")

    @property
    def value_(self) -> dict[str, torch.Tensor]:
        self._check()
        return {r: t.value.float() for r, t in self._tops.items()}

    @property
    def image_(self) -> dict[str, torch.Tensor]:
        self._check()
        return {r: t.image for r, t in self._tops.items()}

    @property
    def position_(self) -> dict[str, torch.Tensor]:
        self._check()
        return {r: t.position for r, t in self._tops.items()}

    def boxes(self, ranking: str, channel: int) -> list[tuple[int, int, int, int]]:
        """The crop of each of ``channel``'s top images: the receptive field of its
        maximum, as (top, left, bottom, right)."""
        self._check()
        if ranking not in RANKINGS:
            raise InputError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
        if not 0 <= channel < self.channels_:
            raise InputError(f"channel {channel} outside the layer's {self.channels_}")
        w = self.receptive_field_["size"][1]
        return [
            crop_box(self.receptive_field_, int(p) // w, int(p) % w, self.image_shape_[1:])
            for p in self._tops[ranking].position[channel]
        ]

    def to_dict(self, channels: list[int] | None = None) -> dict:
        """JSON-ready: per channel and ranking, the images, values and crops."""
        self._check()
        chosen = range(self.channels_) if channels is None else channels
        return {
            "layer": self.layer,
            "top": self.top,
            "target": self.target,
            "seen": self.seen_,
            "channels": [
                {
                    "channel": int(c),
                    **{
                        r: {
                            "images": [int(i) for i in self._tops[r].image[c]],
                            "values": [float(v) for v in self._tops[r].value[c]],
                            "boxes": [list(b) for b in self.boxes(r, int(c))],
                        }
                        for r in RANKINGS
                    },
                }
                for c in chosen
            ],
        }

    # --- resuming ------------------------------------------------------
    def settings(self) -> dict:
        return {"layer": self.layer, "top": self.top, "target": self.target,
                "composite": self.composite, "epsilon": self.epsilon}  # fmt: skip

    def state(self) -> dict:
        """Everything seen so far, as plain tensors and numbers (see :meth:`from_state`)."""
        self._check()
        arrays = {f"{r}/{k}": getattr(t, k) for r, t in self._tops.items()
                  for k in ("value", "image", "position")}  # fmt: skip
        rf = self.receptive_field_
        meta = {**self.settings(), "seen": self.seen_, "channels": self.channels_,
                "image_shape": list(self.image_shape_),
                "receptive_field": {k: list(v) for k, v in rf.items()}}  # fmt: skip
        return {"meta": meta, "arrays": arrays}

    @classmethod
    def from_state(cls, state: dict, batch_size: int | None = None) -> ReferenceImages:
        meta = state["meta"]
        settings = {k: meta[k] for k in ("top", "target", "composite", "epsilon")}
        self = cls(meta["layer"], batch_size=batch_size, **settings)
        self.seen_, self.channels_ = int(meta["seen"]), int(meta["channels"])
        self.image_shape_ = tuple(meta["image_shape"])
        self.receptive_field_ = {k: tuple(v) for k, v in meta["receptive_field"].items()}
        self._tops = {}
        for r in RANKINGS:
            t = _Top(self.channels_, self.top)
            t.value = torch.as_tensor(state["arrays"][f"{r}/value"], dtype=torch.float64)
            t.image = torch.as_tensor(state["arrays"][f"{r}/image"], dtype=torch.long)
            t.position = torch.as_tensor(state["arrays"][f"{r}/position"], dtype=torch.long)
            self._tops[r] = t
        return self


def reference_heatmaps(
    model: nn.Module, data: object, refs: ReferenceImages, channels: list[int], **lrp: Any
) -> dict[int, torch.Tensor]:
    """The conditional heatmap (:func:`~.crp.conditional_relevance`) of each of
    ``channels`` on its top images by relevance, ``{c: [top, H, W]}``, for the class
    ``refs`` ranked by (each image's predicted class when None)."""
    from .crp import conditional_relevance

    data = as_dataset(data)
    device, dtype = placement(model)
    out = {}
    for c in channels:
        x = data.tensors(refs.image_["relevance"][c])[0].to(device, dtype)
        settings = {"composite": refs.composite, "epsilon": refs.epsilon, **lrp}
        maps = conditional_relevance(
            model, x, layer=refs.layer, channels=[c], target=refs.target, **settings
        )
        out[c] = maps[:, 0].cpu()
    return out


def channel_names(model: nn.Module, data: object, layer: str) -> dict[int, dict] | None:
    """Each channel's best network-dissection concept (:class:`~.dissection.Dissection`)
    on ``data``'s masks: ``{c: {"concept", "iou", "detector"}}``; None when ``data`` has
    no concept masks (no object masks nor attributes)."""
    from .dissection import Dissection

    data = as_dataset(data)
    if data.masks is None:
        return None
    d = Dissection([layer]).fit(model, data).result_[layer]
    return {
        c: {"concept": d.concepts[int(d.best[c])], "iou": float(d.best_iou[c]),
            "detector": bool(d.interpretable[c])}
        for c in range(d.channels)
    }  # fmt: skip

"""The explorer's concept view: what an image's prediction uses at a layer, not only where
(Concept Relevance Propagation, Achtibat et al. 2023).

For one browsable image and a spatial layer of the model, :meth:`ConceptView.explain`
returns its top concepts: the layer's channels that carry the most LRP relevance for the
predicted class (their share of the layer's total relevance), each with its conditional
heatmap (:func:`cnnlens.analysis.conditional_relevance`, eq. 7 of the paper: the input
relevance restricted to what flows through that channel) and its reference crops: the
images among the first ``references`` browsable ones where the channel carries the most
relevance (relevance maximisation, :class:`cnnlens.analysis.ReferenceImages`, one pass
per layer, kept), cut to the receptive field of the channel's maximum.

A model LRP has no rule for raises the :class:`~cnnlens.errors.LayerError` LRP raises,
naming the layer or operation; the API answers it with 400 and the page shows it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch

from ..errors import InputError
from .render import map_png, png

REFERENCES = 64  # browsable images the reference crops are drawn from
CROPS = 4  # reference crops per concept
MAX_TOP = 12


class ConceptView:
    """Concepts of the images of a source, computed on first request and kept.

    ``holder``: the source's :class:`~.sources.ModelHolder` (its lock serialises model
    use); ``inputs(indices)``: the model's inputs ``[n, C, H, W]`` of browsable images;
    ``image(index)``: an image as uint8 ``[H, W, C]``; ``indices``: the browsable images.
    """

    def __init__(
        self,
        holder,
        inputs: Callable[[list[int]], torch.Tensor],
        image: Callable[[int], np.ndarray],
        indices: Callable[[], list[int]],
        *,
        references: int = REFERENCES,
    ) -> None:
        self.holder, self.inputs, self.image, self.indices = holder, inputs, image, indices
        self.references = references
        self._refs: dict[str, tuple[list[int], object]] = {}
        self._results: dict[tuple, dict] = {}
        self._lock = threading.Lock()

    def _probe(self) -> torch.Tensor:
        indices = self.indices()
        if not indices:
            raise InputError("there are no images to find concepts in")
        return self.inputs(indices[:1])

    def layers(self) -> dict:
        """The spatial layers offered (``[{"name", "shape"}]``, in forward order) and the
        default: the last spatial stage (:func:`cnnlens.layers.auto_layer`)."""
        from ..layers import auto_layer, suggest

        x = self._probe()
        with self.holder.lock:
            model = self.holder.model
            x = x.to(next(model.parameters()).device)
            found = suggest(model, x)
            default = auto_layer(model, x)
        names = [{"name": n, "shape": list(s)} for n, s in found]
        if default not in {n for n, _ in found}:
            names.append({"name": default, "shape": None})
        return {"layers": names, "default": default}

    def _references(self, layer: str):
        """The reference-image pass of ``layer`` over the first browsable images (kept)."""
        from ..analysis import ReferenceImages

        if layer not in self._refs:
            pool = self.indices()[: self.references]
            x = self.inputs(pool)
            refs = ReferenceImages(layer, top=CROPS).fit(
                self.holder.model, (x, torch.zeros(len(x), dtype=torch.long))
            )
            self._refs[layer] = (pool, refs)
        return self._refs[layer]

    def _crops(self, pool: list[int], refs, channel: int) -> list[dict]:
        out = []
        boxes = refs.boxes("relevance", channel)
        values = refs.value_["relevance"][channel]
        for k, position in enumerate(refs.image_["relevance"][channel].tolist()):
            if not np.isfinite(float(values[k])):
                continue  # fewer images seen than crops asked for
            top, left, bottom, right = boxes[k]
            pixels = self.image(pool[position])[top:bottom, left:right]
            out.append(
                {"image": pool[position], "box": [top, left, bottom, right],
                 "relevance": float(values[k]), "png": png(pixels)}
            )  # fmt: skip
        return out

    def explain(self, index: int, layer: str | None = None, top: int = 4) -> dict:
        """Image ``index``'s ``top`` concepts at ``layer`` (None: the default layer) for
        its predicted class: ``{"layer", "target", "lrp" (PNG), "total", "concepts":
        [{"channel", "relevance", "share", "map" (PNG), "crops": [...]}]}``."""
        from ..analysis import conditional_relevance
        from ..attribution import get as get_method

        if isinstance(top, bool) or not 1 <= top <= MAX_TOP:
            raise InputError(f"top must be 1 .. {MAX_TOP}, got {top}")
        offered = self.layers()
        names = [entry["name"] for entry in offered["layers"]]
        layer = offered["default"] if layer in (None, "") else layer
        if layer not in names:
            raise InputError(
                f"layer {layer!r} is not a spatial layer of this model; /api/concepts/layers "
                f"lists its {len(names)} (default {offered['default']})"
            )
        key = (index, layer, top)
        with self._lock:
            if key in self._results:
                return self._results[key]
        x = self.inputs([index])
        with self.holder.lock:
            model = self.holder.model
            x = x.to(next(model.parameters()).device)
            whole = get_method("lrp")(model)(x)  # LayerError where LRP has no rule
            target = int(whole.target[0])
            at_layer = get_method("lrp")(model, at=layer)(x, target).raw[0]
            per_channel = at_layer.flatten(1).sum(1).double()
            chosen = [int(c) for c in per_channel.argsort(descending=True)[:top]]
            maps = conditional_relevance(model, x, layer=layer, channels=chosen, target=target)
            pool, refs = self._references(layer)
        total = float(per_channel.sum())
        concepts = [
            {
                "channel": c,
                "relevance": float(per_channel[c]),
                "share": float(per_channel[c]) / total if total else None,
                "map": map_png(maps[0, j].cpu().numpy()),
                "crops": self._crops(pool, refs, c),
            }
            for j, c in enumerate(chosen)
        ]
        result = {
            "image": index,
            "layer": layer,
            "target": target,
            "total": total,
            "channels": int(per_channel.numel()),
            "references": len(pool),
            "lrp": map_png(whole.maps[0, 0].detach().cpu().numpy()),
            "concepts": concepts,
        }
        with self._lock:
            self._results[key] = result
        return result

"""Where do influential channels look? Paper 002's Table 7, made measurable.

For a test image of class ``y``, the mean activation map of the class's
influential channels at the last convolutional layer, upsampled to the
input, next to the mean map of the non-influential channels and of all
channels (paper 002, section 5.2.5). On data with object masks (``shapes``)
:func:`in_mask_energy` turns the pictures into a number: the share of a map's
positive energy that falls inside the ground-truth object mask.

The channel ``j`` of the last convolutional layer must be feature ``j`` of
the final layer's input (global average pooling); this is checked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...chunking import chunk_size, run_chunked
from ...data.adapt import as_dataset
from ...data.base import ImageDataset
from ...errors import InputError, LayerError
from ...hooks import HookSet, capture_outputs, frozen
from ...layers import auto_layer, get_layer
from ...placement import model_device
from .influential import InfluentialFeatures

KINDS = ("influential", "non_influential", "all")


def channel_group_maps(
    activations: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """``[N,3,H,W]``: mean map of the channels in ``mask`` ``[N,C]``, of the rest, of all.

    Maps are upsampled bilinearly to ``size``.
    """
    sel = mask.to(activations.dtype)[:, :, None, None]
    rest = 1.0 - sel
    inf = (activations * sel).sum(1) / sel.sum(1).clamp_min(1)
    non = (activations * rest).sum(1) / rest.sum(1).clamp_min(1)
    every = activations.mean(1)
    maps = torch.stack([inf, non, every], 1)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def influential_maps(
    model: nn.Module,
    influential: InfluentialFeatures,
    data: ImageDataset,
    *,
    indices: torch.Tensor | None = None,
    layer: str | None = None,
    by: str = "label",
    batch_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Mean activation maps ``[N,1,H,W]`` per kind in :data:`KINDS` (plus ``classes`` ``[N]``).

    ``layer`` defaults to :func:`~cnnlens.layers.auto_layer`. The channels
    used for an image are those of its label (``by="label"``) or of the
    model's prediction (``by="predicted"``).
    """
    influential._check_fitted()
    if by not in ("label", "predicted"):
        raise InputError(f"by must be 'label' or 'predicted', got {by!r}")
    data = as_dataset(data)
    idx = torch.arange(len(data)) if indices is None else torch.as_tensor(indices).long()
    device = model_device(model)
    probe, _ = data.tensors(idx[:1])
    probe = probe.to(device)
    size = tuple(probe.shape[-2:])
    masks = influential.mask_.to(device)
    with frozen(model):
        name = layer or auto_layer(model, probe)
        head = get_layer(model, influential.head_name_)
        step = chunk_size(model, probe, backward=False, batch_size=batch_size)

        def run(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            x, y = data.tensors(idx[start:stop])
            x, y = x.to(device), y.to(device)
            head_in: list[torch.Tensor] = []
            with torch.no_grad(), capture_outputs(model, [name]) as store, HookSet() as hooks:
                hooks.forward_pre(head, lambda _m, inp: head_in.append(inp[0].flatten(1)))
                logits = model(x)
            acts = store[name]
            if acts.dim() != 4 or acts.shape[1] != influential.n_features_in_:
                raise LayerError(
                    f"layer {name!r} gives {tuple(acts.shape)}; need "
                    f"[N,{influential.n_features_in_},H,W] whose channels are the head's features"
                )
            if not torch.allclose(acts.mean((2, 3)), head_in[-1], rtol=1e-4, atol=1e-5):
                raise LayerError(
                    f"the channels of layer {name!r} are not (average-pooled) the features the "
                    f"final layer {influential.head_name_!r} reads; name the right layer"
                )
            cls = y if by == "label" else logits.argmax(1)
            return channel_group_maps(acts, masks[cls], size), cls

        maps, classes = run_chunked(run, int(idx.numel()), step)
    out = {kind: maps[:, i : i + 1] for i, kind in enumerate(KINDS)}
    out["classes"] = classes
    return out


def in_mask_energy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share ``[N]`` of each map's positive energy inside its mask (NaN for an all-zero map)."""
    if maps.shape[0] != masks.shape[0] or maps.shape[-2:] != masks.shape[-2:]:
        raise InputError(
            f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} must match in N, H and W"
        )
    pos = maps.clamp_min(0).flatten(1)
    inside = (pos * masks.to(pos.device).flatten(1).to(pos.dtype)).sum(1)
    total = pos.sum(1)
    return torch.where(
        total > 0, inside / total.clamp_min(1e-30), torch.full_like(total, float("nan"))
    )


def energy_table(
    model: nn.Module,
    influential: InfluentialFeatures,
    test: ImageDataset,
    *,
    indices: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> dict:
    """Mean in-mask energy share per kind over ``test`` (which must have ``masks``).

    ``mask_area`` is the share a uniform map would get (the chance level).
    """
    test = as_dataset(test)
    if test.masks is None:
        raise InputError(f"{test.name} has no object masks; in-mask energy needs them")
    idx = torch.arange(len(test)) if indices is None else torch.as_tensor(indices).long()
    maps = influential_maps(model, influential, test, indices=idx, batch_size=batch_size)
    gt = test.masks[idx]
    out = {kind: float(in_mask_energy(maps[kind], gt).nanmean()) for kind in KINDS}
    out["mask_area"] = float(gt.flatten(1).float().mean(1).mean())
    out["images"] = int(idx.numel())
    return out

"""Are the influential features essential? The noise ablation of paper 002.

Paper 002 (section 5.2.6, Table 8): after global pooling, overwrite each
image's class-influential features with N(0,1) noise, or as many randomly
chosen non-influential features, and measure the accuracy of the original
(full) final layer. Influential features are essential when the first drop
is much larger than the second.

The overwrite happens on the input of the final linear layer. Since
:func:`~cnnlens.layers.final_linear` guarantees that layer's output is the
model's output, overwriting its input and applying it is exactly a forward
pre-hook on it (``tests/test_analysis_ablation.py`` checks this against a
:class:`~cnnlens.hooks.HookSet` pre-hook); the backbone then runs once
instead of once per seed and variant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...analysis.features import Features, collect_features
from ...data.base import ImageDataset
from ...errors import InputError
from ...layers import get_layer
from .influential import InfluentialFeatures

VARIANTS = ("influential", "non_influential")


def ablation_mask(
    influential: InfluentialFeatures,
    classes: torch.Tensor,
    variant: str,
    generator: torch.Generator,
) -> torch.Tensor:
    """``[N,m]`` bool: the features to overwrite for images of the given ``classes``.

    ``influential``: the image's class set ``I_y``. ``non_influential``: as
    many features drawn uniformly (with ``generator``) from outside ``I_y``.
    """
    if variant not in VARIANTS:
        raise InputError(f"variant must be one of {VARIANTS}, got {variant!r}")
    inside = influential.mask_[classes.to(influential.indices_.device)]
    if variant == "influential":
        return inside
    k = min(influential.k2, influential.n_features_in_ - influential.k2)
    if k < 1:
        raise InputError("no non-influential features to replace: k2 equals the feature width")
    scores = torch.rand(inside.shape, generator=generator).to(inside.device)
    scores[inside] = -1.0
    picks = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros_like(inside).scatter_(1, picks, True)


def overwrite(
    features: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``features`` with the entries under ``mask`` replaced by N(0,1) draws."""
    noise = torch.randn(features.shape, generator=generator).to(features.device, features.dtype)
    return torch.where(mask, noise, features)


def noise_ablation(
    model: nn.Module,
    influential: InfluentialFeatures,
    test: ImageDataset | Features,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    by: str = "label",
    batch_size: int | None = None,
) -> dict:
    """Accuracy with influential vs non-influential features replaced by noise.

    Returns ``{"overall": row, "per_class": [row, ...], "seeds": [...]}``
    where a row holds ``original``, ``influential_mean/std`` and
    ``non_influential_mean/std`` (std over seeds; 0 for one seed). The
    replaced features are those of each image's true class (``by="label"``)
    or predicted class (``by="predicted"``). ``test`` is its :class:`Features` or any
    data :func:`~cnnlens.data.as_dataset` accepts.
    """
    if not seeds:
        raise InputError("noise_ablation needs at least one seed")
    if by not in ("label", "predicted"):
        raise InputError(f"by must be 'label' or 'predicted', got {by!r}")
    influential._check_fitted()
    feats = (
        test if isinstance(test, Features) else collect_features(model, test, batch_size=batch_size)
    )
    head = get_layer(model, influential.head_name_)
    labels = feats.labels
    classes = labels if by == "label" else feats.predicted
    n_classes = influential.n_classes_
    correct = {"original": (feats.logits.argmax(1) == labels).float()[None]}
    with torch.no_grad():
        for variant in VARIANTS:
            runs = []
            for seed in seeds:
                gen = torch.Generator().manual_seed(int(seed) * 2 + VARIANTS.index(variant))
                mask = ablation_mask(influential, classes, variant, gen)
                logits = head(overwrite(feats.features, mask, gen))
                runs.append((logits.argmax(1) == labels).float())
            correct[variant] = torch.stack(runs)  # [S, N]

    def row(select: torch.Tensor, name: str) -> dict:
        out = {"class": name, "images": int(select.sum())}
        for key, hits in correct.items():
            acc = (
                hits[:, select].mean(1)
                if select.any()
                else torch.full((hits.shape[0],), float("nan"))
            )
            if key == "original":
                out["original"] = float(acc[0])
            else:
                out[f"{key}_mean"] = float(acc.mean())
                out[f"{key}_std"] = float(acc.std(unbiased=False))
        return out

    names = getattr(influential, "classes_", [str(c) for c in range(n_classes)])
    per_class = [row(labels == c, names[c]) for c in range(n_classes)]
    overall = row(torch.ones_like(labels, dtype=torch.bool), "all")
    return {"overall": overall, "per_class": per_class, "seeds": [int(s) for s in seeds]}

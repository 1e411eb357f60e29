"""The training objective of the attribute network (paper 003, Eq. 8 and 10).

L = L_b + lambda ||M||_1 with L_b the binary cross-entropy summed over the K attributes and
averaged over the batch (Eq. 8), and ||M||_1 the L1 norm of the K attention masks (entries
are in [0, 1], so it is their sum). The paper gives lambda = 1e-5 and no reduction for the
norm; since the extractor never downsamples, the norm grows with the image area, so the
reduction is a choice (``reduction``):

- ``"sum"`` (default): mean over the batch of the sum over attributes, channels and pixels
  (the literal ||M^k||_1 summed over k, per image, as L_b is per image);
- ``"mean"``: the mean over every mask entry (independent of K, C and the image size; lambda
  then needs to be about K*C*H*W times larger for the same pull).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, InputError
from ...train.objectives import Objective

REDUCTIONS = ("sum", "mean")
PAPER_LAMBDA = 1e-5


def require_attribute_network(model: nn.Module) -> None:
    """A model that gives its masks (``forward_masks``), else an InputError naming what lacks."""
    if not callable(getattr(model, "forward_masks", None)):
        raise InputError(
            f"{type(model).__name__} has no forward_masks(x) -> (logits [N,K], masks "
            "[N,K,C,H,W]); build a cnnlens.studies.channel_roles.AttributeNetwork"
        )


def mask_l1(masks: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """||M||_1 of masks ``[N,K,C,H,W]`` (>= 0) under ``reduction`` (see the module docstring)."""
    if reduction == "sum":
        return masks.abs().flatten(1).sum(1).mean()
    if reduction == "mean":
        return masks.abs().mean()
    raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


class AttributeObjective(Objective):
    """Summed per-attribute BCE + ``lam`` * ||M||_1 (Eq. 10); targets ``[N,K]`` 0/1.

    ``correct`` counts the mean over attributes of correct decisions (logit > 0) per image,
    as :class:`~cnnlens.train.Classification` does for multi-label targets.
    """

    def __init__(self, lam: float = PAPER_LAMBDA, reduction: str = "sum") -> None:
        if reduction not in REDUCTIONS:
            raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if not lam >= 0:
            raise ConfigError(f"lambda must be >= 0, got {lam}")
        self.lam, self.reduction = float(lam), reduction

    def loss(self, model, x, y):
        require_attribute_network(model)
        logits, masks = model.forward_masks(x)
        target = y.float()
        if target.shape != logits.shape:
            raise InputError(
                f"attribute targets have shape {tuple(target.shape)}; the model gives "
                f"{tuple(logits.shape)} logits"
            )
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1).mean()
        loss = bce + self.lam * mask_l1(masks, self.reduction) if self.lam else bce
        correct = float(((logits > 0) == (target > 0.5)).float().mean(1).sum())
        return loss, {
            "correct": correct,
            "count": float(len(x)),
            "bce": float(bce.detach()) * len(x),
        }

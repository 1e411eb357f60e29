"""Unsupervised concept discovery: a concept bank by non-negative matrix factorisation of
a layer's activations (CRAFT, Fel et al. 2023, "CRAFT: Concept Recursive Activation
FacTorization for Explainability", CVPR, section 3.1).

The activations ``A`` ``[P, C]`` of a (non-negative, post-ReLU) layer at ``P`` positions of
the data set's images (each position is the crop its receptive field sees; CRAFT cuts
crops and pools them, here every position of every image is one) are factorised as ``A ~
U W`` with ``U >= 0`` ``[P, k]`` and ``W >= 0`` ``[k, C]`` (Lee & Seung 2001's
multiplicative updates for the Frobenius loss, from a seeded draw). The rows of ``W`` are
the concept directions; an image's coefficient maps ``[k, h, w]`` solve the same problem
with ``W`` fixed (non-negative least squares by the same updates). A concept's importance
for a class is gradient x coefficient (CRAFT's section 3.2 uses Sobol indices; the
gradient form is its cheap first-order stand-in): ``sum_positions U_j <W_j, dS/dA>``,
batched in one backward.

:func:`concept_match` names them where the data has concept masks (``shapes``): network
dissection (:class:`~.dissection.Dissection`) of the coefficient maps as if they were
channels, against the same count for random non-negative directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...chunking import chunk_size, run_chunked
from ...data import as_dataset
from ...errors import InputError, LayerError
from ...gradmode import with_autograd
from ...hooks import capture_outputs, frozen
from ...layers import get_layer
from ...placement import placement

EPS = 1e-9


def nmf(a: torch.Tensor, k: int, *, iters: int = 300, seed: int = 0):
    """``a`` ``[P, C] >= 0`` ~ ``u @ w`` (``[P, k]``, ``[k, C]``, both >= 0): Lee & Seung's
    multiplicative updates from a seeded uniform draw scaled to ``a``'s mean."""
    gen = torch.Generator().manual_seed(seed)
    scale = (a.mean() / k).sqrt().item() or 1.0
    u = torch.rand(a.shape[0], k, generator=gen, dtype=a.dtype) * scale
    w = torch.rand(k, a.shape[1], generator=gen, dtype=a.dtype) * scale
    for _ in range(iters):
        w *= (u.T @ a) / (u.T @ u @ w + EPS)
        u *= (a @ w.T) / (u @ (w @ w.T) + EPS)
    return u, w


def coefficients(a: torch.Tensor, w: torch.Tensor, *, iters: int = 100) -> torch.Tensor:
    """Non-negative ``u`` minimising ``|a - u w|`` for a fixed basis ``w`` (the same
    multiplicative update, from the least-squares start clamped to be positive)."""
    gram = w @ w.T
    u = (a @ torch.linalg.pinv(w)).clamp_min(1e-6)
    target = a @ w.T
    for _ in range(iters):
        u *= target / (u @ gram + EPS)
    return u


def _positions(out: torch.Tensor) -> torch.Tensor:
    return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])


@dataclass
class ConceptBank:
    """``directions`` ``[k, C]`` (non-negative, each of unit norm) at ``layer``; ``error``:
    the factorisation's relative residual ``|A - U W| / |A|`` on the images it came from."""

    layer: str
    directions: torch.Tensor
    error: float
    n_images: int

    @property
    def k(self) -> int:
        return int(self.directions.shape[0])

    def _activations(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with capture_outputs(model, [self.layer]) as out:
            model(x)
        return out[self.layer]

    @torch.no_grad()
    def coefficients(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Each concept's coefficient map ``[N, k, h, w]`` on images ``x``."""
        with frozen(model):
            a = self._activations(model, x)
        u = coefficients(_positions(a).double(), self.directions.to(a.device).double())
        n, _, h, w = a.shape
        return u.view(n, h, w, self.k).permute(0, 3, 1, 2).float()

    @with_autograd
    def importance(self, model: nn.Module, x: torch.Tensor, target=None) -> torch.Tensor:
        """Gradient x coefficient ``[N, k]``: ``sum_positions U_j <W_j, dS_t/dA>`` for the
        target class (None: each image's prediction), one backward for all concepts."""
        from ...attribution.base import resolve_target
        from ...attribution.common import stored_layer, target_scores

        with frozen(model):
            targets, _ = resolve_target(model, x, target)
            with stored_layer(model, self.layer) as store:
                logits = model(x)
            a = store["out"]
            (g,) = torch.autograd.grad(target_scores(logits, targets).sum(), a)
        u = self.coefficients(model, x).flatten(2)  # [N, k, P]
        grad = g.flatten(2)  # [N, C, P]
        along = torch.einsum("kc,ncp->nkp", self.directions.to(g), grad)
        return (u * along).sum(2)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "k": self.k, "error": self.error,
                "n_images": self.n_images, "directions": self.directions.tolist()}  # fmt: skip


def discover_concepts(
    model: nn.Module,
    data: object,
    layer: str,
    k: int,
    *,
    n: int | None = None,
    iters: int = 300,
    seed: int = 0,
) -> ConceptBank:
    """A bank of ``k`` concepts of ``layer`` from the first ``n`` images of ``data``
    (default all) by NMF of its activations at every position (see the module docstring).
    ``layer`` must give non-negative ``[N, C, H, W]`` outputs (after a ReLU)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    data = as_dataset(data)
    n = len(data) if n is None else min(n, len(data))
    get_layer(model, layer)
    device, dtype = placement(model)
    with frozen(model):
        probe = data.tensors([0])[0].to(device, dtype)
        size = chunk_size(model, probe, backward=False)

        def run(lo: int, hi: int) -> torch.Tensor:
            x = data.tensors(torch.arange(lo, hi))[0].to(device, dtype)
            with torch.no_grad(), capture_outputs(model, [layer]) as out:
                model(x)
            if out[layer].dim() != 4:
                raise LayerError(f"layer {layer!r} gives {tuple(out[layer].shape)}; needs 4-D")
            return _positions(out[layer]).cpu()

        a = run_chunked(run, n, size).double()
    if float(a.min()) < 0:
        raise LayerError(
            f"layer {layer!r} has negative activations; NMF needs a non-negative layer "
            "(a block's output after its ReLU)"
        )
    if k > min(a.shape):
        raise InputError(f"k={k} is more than the layer's {a.shape[1]} channels")
    u, w = nmf(a, k, iters=iters, seed=seed)
    norms = w.norm(dim=1, keepdim=True).clamp_min(EPS)
    error = float((a - u @ w).norm() / a.norm().clamp_min(EPS))
    return ConceptBank(layer, (w / norms).float(), error, n)


class _Coefficients(nn.Module):
    """The model with a ``concepts`` module whose output is the bank's coefficient maps, so
    network dissection can read them as channels; the logits are the model's."""

    def __init__(self, model: nn.Module, directions: torch.Tensor, layer: str) -> None:
        super().__init__()
        self.model, self.layer = model, layer
        self.register_buffer("directions", directions.double())
        self.concepts = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with capture_outputs(self.model, [self.layer]) as out:
            logits = self.model(x)
        a = out[self.layer].detach()
        n, _, h, w = a.shape
        u = coefficients(_positions(a).double(), self.directions)
        self.concepts(u.view(n, h, w, -1).permute(0, 3, 1, 2).float())
        return logits


def concept_match(
    model: nn.Module,
    data: object,
    bank: ConceptBank,
    *,
    concepts: object = None,
    iou_threshold: float = 0.04,
    seed: int = 0,
) -> dict:
    """How many of the bank's concepts match a known concept of ``data`` (network
    dissection of their coefficient maps: best IoU above ``iou_threshold``), beside the
    count for ``bank.k`` random non-negative unit directions (seeded) treated alike.
    ``concepts``: the concepts to match (default: every one of the data's masks)."""
    from .dissection import Dissection

    gen = torch.Generator().manual_seed(seed)
    random = torch.rand(bank.k, bank.directions.shape[1], generator=gen)
    random /= random.norm(dim=1, keepdim=True)
    out = {"layer": bank.layer, "k": bank.k, "iou_threshold": iou_threshold}
    for name, directions in (("discovered", bank.directions), ("random", random)):
        wrapped = _Coefficients(model, directions, bank.layer)
        d = Dissection(["concepts"], iou_threshold=iou_threshold).fit(wrapped, data, concepts)
        result = d.result_["concepts"]
        labels = result.labels
        out[name] = {
            "matched": sum(label is not None for label in labels),
            "labels": labels,
            "best_iou": [float(v) for v in result.best_iou],
            "distinct": len({label for label in labels if label is not None}),
        }
    return out

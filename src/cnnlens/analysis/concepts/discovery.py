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

The second option (``method="sae"``) is a top-k sparse autoencoder (Makhzani & Frey 2014,
"k-Sparse Autoencoders"; Gao et al. 2024, "Scaling and evaluating sparse autoencoders",
eq. 2-3 and their tied initialisation): codes ``z = TopK(ReLU((a - b_dec) W_enc + b_enc))``
keep the ``active`` largest of each row, the reconstruction is ``z D + b_dec`` with the
decoder's rows (the concept directions) of unit norm, trained from a seeded draw on the
mean squared error with Adam on seeded mini-batches. ``cnnlens.train.fit`` trains models on
image data sets with a classification objective; this trains on activation rows and
projects the decoder back to unit rows after every step, so it is the few-line loop of
:func:`topk_sae`. The codes are the coefficient maps; importance and reference crops are
computed as for NMF.

:meth:`ConceptBank.references` gives each concept's reference crops: the images where its
coefficient peaks highest, cut to the receptive field of the peak (as
:class:`~.relmax.ReferenceImages` does for channels).

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


def topk_sae(
    a: torch.Tensor,
    k: int,
    *,
    active: int,
    steps: int = 1000,
    batch: int = 512,
    lr: float = 1e-3,
    seed: int = 0,
) -> tuple[dict, list[float]]:
    """A top-``active`` sparse autoencoder of ``k`` latents on rows ``a`` ``[P, C]`` (see
    the module docstring). Returns its parameters ``{"w_enc" [C, k], "b_enc" [k], "b_dec"
    [C], "decoder" [k, C] (unit rows), "scale", "active"}`` (rows are divided by
    ``scale``, their mean norm, inside) and the relative reconstruction error of the
    whole of ``a`` before and after training."""
    gen = torch.Generator().manual_seed(seed)
    a = a.float()
    scale = float(a.norm(dim=1).mean()) or 1.0
    x = a / scale
    decoder = torch.nn.functional.normalize(torch.randn(k, a.shape[1], generator=gen), dim=1)
    params = {
        "w_enc": decoder.T.clone().requires_grad_(True),  # tied initialisation (Gao et al.)
        "b_enc": torch.zeros(k, requires_grad=True),
        "b_dec": x.mean(0).clone().requires_grad_(True),
        "decoder": decoder.requires_grad_(True),
    }
    sae = {"scale": scale, "active": active, **params}
    errors = [_sae_error(sae, a)]
    optimiser = torch.optim.Adam(params.values(), lr=lr)
    for _ in range(steps):
        rows = x[torch.randint(len(x), (min(batch, len(x)),), generator=gen)]
        z = _sae_codes(sae, rows * scale)
        loss = (z @ params["decoder"] + params["b_dec"] - rows).pow(2).sum(1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            params["decoder"] /= params["decoder"].norm(dim=1, keepdim=True).clamp_min(EPS)
    out = {"scale": scale, "active": active, **{n: p.detach() for n, p in params.items()}}
    errors.append(_sae_error(out, a))
    return out, errors


def _sae_codes(sae: dict, a: torch.Tensor) -> torch.Tensor:
    """The top-``active`` codes ``[P, k]`` of rows ``a`` (in the data's own scale)."""
    w = sae["w_enc"]
    pre = torch.relu((a.to(w) / sae["scale"] - sae["b_dec"]) @ w + sae["b_enc"])
    value, index = pre.topk(sae["active"], dim=1)
    return torch.zeros_like(pre).scatter(1, index, value)


@torch.no_grad()
def _sae_error(sae: dict, a: torch.Tensor) -> float:
    x = a.float() / sae["scale"]
    back = _sae_codes(sae, a) @ sae["decoder"] + sae["b_dec"]
    return float((x - back).norm() / x.norm().clamp_min(EPS))


def _positions(out: torch.Tensor) -> torch.Tensor:
    return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])


@dataclass
class ConceptBank:
    """``directions`` ``[k, C]`` (each of unit norm; non-negative for NMF) at ``layer``;
    ``error``: the factorisation's relative residual ``|A - U W| / |A|`` on the images it
    came from; ``method``: ``"nmf"`` or ``"sae"``, whose ``encoder`` (:func:`topk_sae`'s
    parameters) gives the codes; ``initial_error``: the residual before training (SAE)."""

    layer: str
    directions: torch.Tensor
    error: float
    n_images: int
    method: str = "nmf"
    encoder: dict | None = None
    initial_error: float | None = None

    @property
    def k(self) -> int:
        return int(self.directions.shape[0])

    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """The concept coefficients ``[P, k]`` of activation rows ``[P, C]``: NNLS on the
        directions (NMF) or the encoder's top-k codes (SAE)."""
        if self.method == "sae":
            return _sae_codes(self.encoder, rows).double()
        return coefficients(rows.double(), self.directions.to(rows.device).double())

    def _activations(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with capture_outputs(model, [self.layer]) as out:
            model(x)
        return out[self.layer]

    @torch.no_grad()
    def coefficients(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Each concept's coefficient map ``[N, k, h, w]`` on images ``x``."""
        with frozen(model):
            a = self._activations(model, x)
        u = self.encode(_positions(a))
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

    @torch.no_grad()
    def references(self, model: nn.Module, data: object, *, top: int = 8) -> dict:
        """Each concept's top-``top`` images of ``data`` by the peak of its coefficient map,
        with the crop the peak's receptive field sees: ``{"images", "values", "boxes"}``,
        each ``[k][top]`` (one streaming pass; ties go to the first image)."""
        from .relmax import _Top, crop_box, receptive_field

        if not isinstance(top, int) or isinstance(top, bool) or top < 1:
            raise InputError(f"top must be a positive integer, got {top!r}")
        data = as_dataset(data)
        device, dtype = placement(model)
        probe = data.tensors([0])[0].to(device, dtype)
        rf = receptive_field(model, self.layer, probe)
        best = _Top(self.k, top)
        with frozen(model):
            size = chunk_size(model, probe, backward=False)
            for lo in range(0, len(data), size):
                hi = min(lo + size, len(data))
                maps = self.coefficients(model, data.tensors(torch.arange(lo, hi))[0].to(device))
                value, position = maps.flatten(2).max(2)
                best.add(value, torch.arange(lo, hi), position)
        width = rf["size"][1]
        boxes = [[list(crop_box(rf, int(p) // width, int(p) % width, probe.shape[-2:]))
                  for p in row] for row in best.position]  # fmt: skip
        return {"images": best.image.tolist(), "values": best.value.float().tolist(),
                "boxes": boxes}  # fmt: skip

    def to_dict(self) -> dict:
        out = {"layer": self.layer, "method": self.method, "k": self.k, "error": self.error,
               "n_images": self.n_images, "directions": self.directions.tolist()}  # fmt: skip
        if self.method == "sae":
            out |= {"active": self.encoder["active"], "initial_error": self.initial_error}
        return out


def discover_concepts(
    model: nn.Module,
    data: object,
    layer: str,
    k: int,
    *,
    n: int | None = None,
    method: str = "nmf",
    iters: int = 300,
    active: int | None = None,
    steps: int = 1000,
    seed: int = 0,
) -> ConceptBank:
    """A bank of ``k`` concepts of ``layer`` from the first ``n`` images of ``data``
    (default all) by factorising its activations at every position (see the module
    docstring): ``method="nmf"`` (``iters`` multiplicative updates; ``layer`` must give
    non-negative ``[N, C, H, W]`` outputs, after a ReLU) or ``"sae"`` (a top-``active``
    sparse autoencoder, default ``max(1, k // 4)`` active, trained ``steps`` Adam steps).
    ``seed`` fixes the draws of either."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    if method not in ("nmf", "sae"):
        raise InputError(f"method must be 'nmf' or 'sae', got {method!r}")
    active = max(1, k // 4) if active is None else active
    if method == "sae" and (isinstance(active, bool) or not isinstance(active, int)
                            or not 1 <= active <= k):  # fmt: skip
        raise InputError(f"active must be an integer 1 .. k={k}, got {active!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise InputError(f"steps must be a non-negative integer, got {steps!r}")
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
    if k > a.shape[1]:
        raise InputError(f"k={k} is more than the layer's {a.shape[1]} channels")
    if method == "sae":
        sae, (before, after) = topk_sae(a, k, active=active, steps=steps, seed=seed)
        return ConceptBank(layer, sae["decoder"].clone(), after, n, "sae", sae, before)
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

    def __init__(self, model: nn.Module, bank: ConceptBank) -> None:
        super().__init__()
        self.model, self.bank = model, bank
        self.concepts = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with capture_outputs(self.model, [self.bank.layer]) as out:
            logits = self.model(x)
        a = out[self.bank.layer].detach()
        n, _, h, w = a.shape
        u = self.bank.encode(_positions(a))
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
    count for ``bank.k`` random non-negative unit directions (seeded) whose coefficients
    are found as NMF's are (NNLS), whichever method made the bank.
    ``concepts``: the concepts to match (default: every one of the data's masks)."""
    from .dissection import Dissection

    gen = torch.Generator().manual_seed(seed)
    random = torch.rand(bank.k, bank.directions.shape[1], generator=gen)
    random /= random.norm(dim=1, keepdim=True)
    out = {"layer": bank.layer, "k": bank.k, "iou_threshold": iou_threshold}
    baseline = ConceptBank(bank.layer, random, float("nan"), 0)
    for name, concepts_of in (("discovered", bank), ("random", baseline)):
        wrapped = _Coefficients(model, concepts_of)
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

"""The linear student of re-label distillation (paper 004, Eqs. 1, 2 and 7), many at once.

Student: ``P_S(x') = softmax(W v + b)`` with ``W`` in ``R^{2 x D}`` and ``v`` the
synthetic image, flattened and centred (its mean over the ``n`` synthetic
images of the same input subtracted). Under a softmax only ``u = w_1 - w_0``
and ``a = b_1 - b_0`` matter: ``P_S = (1 - sigma(s), sigma(s))``, ``s = u.v + a``;
``u`` is the saliency (Eq. 1's ``m``). The student is trained in that form.

Loss per input (mean over its ``n`` samples), with ``P_T = (1 - p_T, p_T)``:

* ``"relabel"`` (Eq. 7): ``lambda1 ||P_S - P_T||_2 + lambda2 ||P_S - onehot(y')||_1``
  ``= lambda1 sqrt(2) |sigma(s) - p_T| + 2 lambda2 |sigma(s) - y'|`` (each ``|.|``
  Huber-rounded within 0.05 of 0, :func:`smooth_abs`);
* ``"ce"`` (Eq. 2): ``lambda1 CE(P_T, P_S) + lambda2 CE(onehot(y'), P_S)``;

plus weight decay ``weight_decay ||W||_F^2`` taken at the minimum-norm ``W =
(-u/2, u/2)`` (the one any weight decay converges to), i.e. ``weight_decay
||u||^2 / 2``: ``D`` (pixels x channels) is far larger than ``n``.

Optimiser: ``steps`` full-batch gradient-descent steps with momentum and a
cosine decay, starting at ``u = 0, a = 0`` (:func:`fit_students`). The
students of all inputs of a batch are one batched problem (the loss is a sum
of per-input losses, the step size is computed per input), so training them
together equals training each alone up to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import InputError

LOSSES = ("relabel", "ce")


@dataclass
class Students:
    """Fitted students: ``u = w_1 - w_0`` ``[K, D]``, ``a = b_1 - b_0`` ``[K]``, and the
    share of training samples each student labels as its teacher did (``fidelity``)."""

    u: torch.Tensor
    a: torch.Tensor
    fidelity: torch.Tensor
    loss: torch.Tensor


def check_lambdas(lambda1: object, lambda2: object) -> tuple[float, float]:
    """Finite, non-negative weights of which at least one is positive."""
    out = []
    for name, v in (("lambda1", lambda1), ("lambda2", lambda2)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
        out.append(float(v))
    if out[0] == 0 and out[1] == 0:
        raise InputError("lambda1 and lambda2 cannot both be 0: the student would learn nothing")
    return out[0], out[1]


SMOOTHING = 0.05


def smooth_abs(d: torch.Tensor) -> torch.Tensor:
    """``|d|``, Huber-rounded within :data:`SMOOTHING` (0.05, in probability) of 0.

    With the exact ``|d|`` (or a rounding within 1e-3 or 1e-2) gradient descent
    bounces across the kink and the path depends on the float rounding of single
    products: the same student trained in another batch ended 2-30 % of its
    largest weight away. At 0.05 it is the same to 1e-5.
    """
    return torch.where(d.abs() < SMOOTHING, d * d / (2 * SMOOTHING), d.abs() - SMOOTHING / 2)


def student_loss(
    s: torch.Tensor,
    soft: torch.Tensor,
    hard: torch.Tensor,
    *,
    loss: str,
    lambda1: float,
    lambda2: float,
) -> torch.Tensor:
    """Per-input loss ``[K]`` (mean over samples) for student logits ``s`` ``[K, n]``."""
    if loss == "relabel":
        p = torch.sigmoid(s)
        terms = lambda1 * math.sqrt(2) * smooth_abs(p - soft) + 2 * lambda2 * smooth_abs(p - hard)
    elif loss == "ce":
        # CE(q, P_S) = -(1 - q) log(1 - sigma(s)) - q log sigma(s) = BCE-with-logits(s, q)
        terms = lambda1 * F.binary_cross_entropy_with_logits(
            s, soft, reduction="none"
        ) + lambda2 * F.binary_cross_entropy_with_logits(s, hard, reduction="none")
    else:
        raise InputError(f"loss must be one of {LOSSES}, got {loss!r}")
    return terms.mean(1)


def loss_slope(
    s: torch.Tensor,
    soft: torch.Tensor,
    hard: torch.Tensor,
    *,
    loss: str,
    lambda1: float,
    lambda2: float,
) -> torch.Tensor:
    """``d loss / d s`` per sample ``[K, n]`` (before the mean over samples)."""
    p = torch.sigmoid(s)
    if loss == "relabel":

        def slope(d: torch.Tensor) -> torch.Tensor:
            return (d / SMOOTHING).clamp(-1.0, 1.0)

        sign = lambda1 * math.sqrt(2) * slope(p - soft) + 2 * lambda2 * slope(p - hard)
        return sign * p * (1 - p)
    return lambda1 * (p - soft) + lambda2 * (p - hard)


def largest_eigenvalue(v: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """``lambda_max(V^T V / n)`` per input ``[K]`` by power iteration (seeded start)."""
    k, n, d = v.shape
    gen = torch.Generator(device=v.device).manual_seed(0)
    w = torch.randn(d, generator=gen, device=v.device, dtype=v.dtype).expand(k, d).contiguous()
    value = torch.zeros(k, device=v.device, dtype=v.dtype)
    for _ in range(iterations):
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-30)
        image = torch.bmm(torch.bmm(v, w[:, :, None]).transpose(1, 2), v)[:, 0] / n
        value = (image * w).sum(1)
        w = image
    return value.clamp_min(0)


def fit_students(
    features: torch.Tensor,
    soft: torch.Tensor,
    hard: torch.Tensor,
    *,
    loss: str = "relabel",
    lambda1: float = 0.7,
    lambda2: float = 0.3,
    weight_decay: float = 1e-3,
    steps: int = 100,
    lr: float = 1.0,
    momentum: float = 0.9,
) -> Students:
    """Train one linear student per input: ``features`` ``[K, n, D]`` (centred here),
    soft labels ``p_T(c|x')`` and hard labels ``y'`` ``[K, n]``.

    Full-batch gradient descent with heavy-ball ``momentum`` on the analytic
    gradient (two batched matrix-vector products per step, no autograd graph over
    the ``[K, n, D]`` features), step ``lr / (lambda_max(V^T V / n) / 4 + weight_decay)``
    per input (the loss's curvature bound in ``u``; the bias ``a`` takes step ``4 lr``)
    with a cosine decay. Gradient descent moves ``u`` along directions of the data,
    never one pixel for its own sake as Adam's per-coordinate scaling would, so the
    weights stay a saliency; and it treats every input alike, whatever the batch.
    """
    lambda1, lambda2 = check_lambdas(lambda1, lambda2)
    if loss not in LOSSES:
        raise InputError(f"loss must be one of {LOSSES}, got {loss!r}")
    if features.dim() != 3:
        raise InputError(f"features must be [K, n, D], got {tuple(features.shape)}")
    v = features - features.mean(1, keepdim=True)
    k, n, d = v.shape
    soft, hard = soft.to(v.dtype), hard.to(v.dtype)
    curvature = largest_eigenvalue(v) / 4 + weight_decay
    step_u = (lr / curvature.clamp_min(1e-12))[:, None]
    u = torch.zeros(k, d, device=v.device, dtype=v.dtype)
    a = torch.zeros(k, device=v.device, dtype=v.dtype)
    vel_u, vel_a = torch.zeros_like(u), torch.zeros_like(a)
    kw = {"loss": loss, "lambda1": lambda1, "lambda2": lambda2}
    for step in range(steps):
        s = torch.bmm(v, u[:, :, None])[:, :, 0] + a[:, None]
        g_s = loss_slope(s, soft, hard, **kw) / n
        grad_u = torch.bmm(g_s[:, None, :], v)[:, 0] + weight_decay * u
        decay = 0.5 * (1 + math.cos(math.pi * step / steps))
        vel_u.mul_(momentum).add_(grad_u, alpha=1.0)
        vel_a.mul_(momentum).add_(g_s.sum(1))
        u = u - decay * step_u * vel_u
        a = a - decay * 4 * lr * vel_a
    s = torch.bmm(v, u[:, :, None])[:, :, 0] + a[:, None]
    fidelity = ((s > 0).to(v.dtype) == hard).to(v.dtype).mean(1)
    final = student_loss(s, soft, hard, **kw) + 0.5 * weight_decay * (u * u).sum(1)
    return Students(u, a, fidelity, final)

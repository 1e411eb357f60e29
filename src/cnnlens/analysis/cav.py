"""Concept activation vectors: the direction of a concept in a layer's activation space.

Kim et al. 2018 (TCAV, section 3.1): a linear classifier separates the layer
activations ``f_l(x)`` (flattened) of a concept's images from those of random
images; the CAV ``v_C^l`` is the unit normal of its decision boundary, pointing
towards the concept. ``"logistic"``: scikit-learn's L2 logistic regression (one
of the two classifiers of Kim et al.'s code), solved to its optimum; ``"mean"``:
the concept's mean activation minus the random images' mean activation,
normalised (the closed form, no optimisation; the discriminant direction when
both sets share an isotropic spread). The accuracy on a held-out split of both
sets says whether the layer separates the concept at all: a CAV near 50 % is a
random direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from ..errors import InputError

METHODS = ("logistic", "mean")
# The logistic regression's solver. Newton steps on the <= n-dimensional problem (below)
# reach the optimum in ~12 iterations; lbfgs on ResNet-20 layer3 activations (4096 values,
# 68 images) stopped 5e-3 (cosine) short of it after 535 iterations at its default tolerance
# and did not converge in 1000 at 1e-6, 30-70x slower.
SOLVER = "newton-cholesky"
MAX_ITER = 100
TOL = 1e-6


@dataclass(frozen=True, eq=False)
class CAV:
    """One CAV: the unit ``vector`` ``[P]`` (float64, CPU) separating ``concept`` from its
    random ``counterpart`` and pointing towards the concept, its held-out ``accuracy``, and
    which images trained and tested it (indices into the concept's data set and into the
    random data set)."""

    concept: str
    counterpart: str
    vector: torch.Tensor
    accuracy: float
    concept_train: torch.Tensor
    concept_test: torch.Tensor
    random_train: torch.Tensor
    random_test: torch.Tensor


def learn_cav(
    concept: torch.Tensor,
    random: torch.Tensor,
    *,
    method: str = "logistic",
    held_out: float = 0.33,
    C: float = 1.0,
    generator: torch.Generator | None = None,
    name: str = "concept",
    counterpart: str = "random",
) -> CAV:
    """The CAV separating activations ``concept`` ``[n, P]`` from ``random`` ``[m, P]``.

    A share ``held_out`` of each set (at least one image) is kept out of the fit to
    measure the accuracy; the split draws from ``generator`` (default: seed 0).
    ``method``: ``"logistic"`` (``C``: inverse L2 strength of
    :class:`sklearn.linear_model.LogisticRegression`) or ``"mean"``, classifying by the
    side of the midpoint of the two training means. The CAV's index fields are row
    positions of ``concept`` / ``random``.
    """
    if method not in METHODS:
        raise InputError(f"cav must be one of {METHODS}, got {method!r}")
    if not isinstance(held_out, float | int) or isinstance(held_out, bool):
        raise InputError(f"held_out must be a share in (0, 1), got {held_out!r}")
    if not 0 < held_out < 1:
        raise InputError(f"held_out must be a share in (0, 1), got {held_out!r}")
    x_c, x_r = _rows(concept, name), _rows(random, counterpart)
    if x_c.shape[1] != x_r.shape[1]:
        raise InputError(
            f"{name!r} has {x_c.shape[1]} activation values per image but {counterpart!r} has "
            f"{x_r.shape[1]}; both must come from the same layer and image size"
        )
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    c_train, c_test = _split(len(x_c), held_out, gen, name)
    r_train, r_test = _split(len(x_r), held_out, gen, counterpart)
    train_x = np.concatenate([x_c[c_train], x_r[r_train]])
    train_y = np.r_[np.ones(len(c_train)), np.zeros(len(r_train))]
    test_x = np.concatenate([x_c[c_test], x_r[r_test]])
    test_y = np.r_[np.ones(len(c_test)), np.zeros(len(r_test))]
    if method == "logistic":
        vector, predict = _logistic(train_x, train_y, C)
    else:
        vector, predict = _mean_difference(x_c[c_train], x_r[r_train])
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0:
        raise InputError(
            f"no direction separates {name!r} from {counterpart!r}: their activations are "
            "the same at this layer"
        )
    accuracy = float((predict(test_x) == test_y).mean())
    as_long = lambda i: torch.from_numpy(i).long()  # noqa: E731
    return CAV(
        name,
        counterpart,
        torch.from_numpy(vector / norm),
        accuracy,
        as_long(c_train),
        as_long(c_test),
        as_long(r_train),
        as_long(r_test),
    )


def _rows(values: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    x = torch.as_tensor(values).detach().cpu().double()
    if x.dim() != 2:
        raise InputError(f"activations of {name!r} must be [n, P], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError(f"activations of {name!r} contain NaN or infinite values")
    return x.numpy()


def _split(n: int, held_out: float, gen: torch.Generator, name: str):
    """Sorted (train, test) row positions of a set of ``n``: ``held_out`` of them to test."""
    test = max(1, round(held_out * n))
    if n - test < 1:
        raise InputError(
            f"{name!r} has {n} image(s), too few to hold {held_out:.0%} of them out and train "
            "on the rest; give at least 2"
        )
    order = torch.randperm(n, generator=gen).numpy()
    return np.sort(order[test:]), np.sort(order[:test])


def _logistic(x: np.ndarray, y: np.ndarray, C: float):
    """L2 logistic regression, solved by Newton's method to convergence. With more features
    than images (the usual case: P = C*H*W) it is solved in the images' span, where the
    optimum lies (the penalty's gradient ``w`` is ``-C`` times a sum of the rows of ``x``
    there): with the Gram matrix ``x x^T = U S U^T``, the coordinates ``z = U S^(1/2)``
    satisfy ``x = z V^T`` with ``V = x^T U S^(-1/2)`` orthonormal (``|V a| = |a|``), so it is
    the same problem in at most n dimensions instead of P, and ``w = V a``. The Gram matrix
    costs one ``[n,P] x [P,n]`` product; a QR of the tall ``x^T`` was 20x slower. The
    products run in torch (float64), which shares the model's thread pool; NumPy's BLAS
    threads were 4x slower beside it."""
    basis = None
    if x.shape[1] > x.shape[0]:
        rows = torch.from_numpy(x)
        s, u = torch.linalg.eigh(rows @ rows.T)
        keep = s > s.max() * len(s) * torch.finfo(torch.float64).eps
        root = s[keep].sqrt()
        basis = ((rows.T @ u[:, keep]) / root).numpy()
        x = (u[:, keep] * root).numpy()
    model = LogisticRegression(C=C, solver=SOLVER, max_iter=MAX_ITER, tol=TOL).fit(x, y)
    weights = model.coef_[0].astype(np.float64)
    if basis is not None:
        weights = basis @ weights
    bias = float(model.intercept_[0])
    return weights, lambda v: (v @ weights + bias > 0).astype(np.float64)


def _mean_difference(concept: np.ndarray, random: np.ndarray):
    mu_c, mu_r = concept.mean(0), random.mean(0)
    vector = mu_c - mu_r
    threshold = float(vector @ (mu_c + mu_r) / 2)
    return vector, lambda v: (v @ vector > threshold).astype(np.float64)

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

from ...errors import InputError

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
    check_options(method, held_out)
    x_c, x_r = _rows(concept, name), _rows(random, counterpart)
    if x_c.shape[1] != x_r.shape[1]:
        raise InputError(
            f"{name!r} has {x_c.shape[1]} activation values per image but {counterpart!r} has "
            f"{x_r.shape[1]}; both must come from the same layer and image size"
        )
    rows_c, rows_r = torch.arange(len(x_c)), torch.arange(len(x_r))
    options = {"method": method, "held_out": held_out, "C": C, "generator": generator}
    return cav_of_rows(x_c, rows_c, x_r, rows_r, name=name, counterpart=counterpart, **options)


def check_options(method: str, held_out: float) -> None:
    """An InputError unless ``method`` is a CAV method and ``held_out`` a share in (0, 1)."""
    if method not in METHODS:
        raise InputError(f"cav must be one of {METHODS}, got {method!r}")
    if not isinstance(held_out, float | int) or isinstance(held_out, bool):
        raise InputError(f"held_out must be a share in (0, 1), got {held_out!r}")
    if not 0 < held_out < 1:
        raise InputError(f"held_out must be a share in (0, 1), got {held_out!r}")


def cav_of_rows(
    concept_acts: torch.Tensor,
    concept_rows: torch.Tensor,
    random_acts: torch.Tensor,
    random_rows: torch.Tensor,
    *,
    method: str,
    held_out: float,
    C: float,
    generator: torch.Generator | None,
    name: str,
    counterpart: str,
) -> CAV:
    """:func:`learn_cav` on rows ``concept_rows`` of ``concept_acts`` and ``random_rows`` of
    ``random_acts`` (finite float64 ``[*, P]`` tensors, checked by the caller), so that a
    caller learning many CAVs from one activation matrix copies only each fit's rows."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    c_train, c_test = _split(len(concept_rows), held_out, gen, name)
    r_train, r_test = _split(len(random_rows), held_out, gen, counterpart)

    def rows(c: np.ndarray, r: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x_c = concept_acts.index_select(0, concept_rows[torch.from_numpy(c)])
        x_r = random_acts.index_select(0, random_rows[torch.from_numpy(r)])
        labels = torch.cat([torch.ones(len(c)), torch.zeros(len(r))]).double()
        return torch.cat([x_c, x_r]), labels

    train_x, train_y = rows(c_train, r_train)
    if method == "logistic":
        vector, bias = _logistic(train_x, train_y, C)
    else:
        vector, bias = _mean_difference(train_x[: len(c_train)], train_x[len(c_train) :])
    norm = float(torch.linalg.vector_norm(vector))
    if not np.isfinite(norm) or norm == 0:
        raise InputError(
            f"no direction separates {name!r} from {counterpart!r}: their activations are "
            "the same at this layer"
        )
    test_x, test_y = rows(c_test, r_test)
    accuracy = float(((test_x @ vector + bias > 0).double() == test_y).double().mean())
    as_long = lambda i: torch.from_numpy(i).long()  # noqa: E731
    return CAV(
        name,
        counterpart,
        vector / norm,
        accuracy,
        as_long(c_train),
        as_long(c_test),
        as_long(r_train),
        as_long(r_test),
    )


def _rows(values: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    x = torch.as_tensor(values).detach().cpu().double()
    if x.dim() != 2:
        raise InputError(f"activations of {name!r} must be [n, P], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError(f"activations of {name!r} contain NaN or infinite values")
    return x


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


def _logistic(x: torch.Tensor, y: torch.Tensor, C: float) -> tuple[torch.Tensor, float]:
    """L2 logistic regression, solved by Newton's method to convergence: ``(w, b)``. With
    more features than images (the usual case: P = C*H*W) it is solved in the images' span,
    where the optimum lies (the penalty's gradient ``w`` is ``-C`` times a sum of the rows of
    ``x`` there): with the Gram matrix ``x x^T = U S U^T``, the coordinates ``z = U S^(1/2)``
    satisfy ``x = z V^T`` with ``V = x^T U S^(-1/2)`` orthonormal (``|V a| = |a|``), so it is
    the same problem in at most n dimensions instead of P, and ``w = V a = x^T (U S^(-1/2)
    a)``. The Gram matrix costs one ``[n,P] x [P,n]`` product; a QR of the tall ``x^T`` was
    20x slower. The products run in torch (float64), which shares the model's thread pool;
    NumPy's BLAS threads were 4x slower beside it."""
    solver = LogisticRegression(C=C, solver=SOLVER, max_iter=MAX_ITER, tol=TOL)
    if x.shape[1] <= x.shape[0]:
        model = solver.fit(x.numpy(), y.numpy())
        return torch.from_numpy(model.coef_[0].astype(np.float64)), float(model.intercept_[0])
    s, u = torch.linalg.eigh(x @ x.T)
    keep = s > s.max() * len(s) * torch.finfo(torch.float64).eps
    root = s[keep].sqrt()
    model = solver.fit((u[:, keep] * root).numpy(), y.numpy())
    coefficients = (u[:, keep] / root) @ torch.from_numpy(model.coef_[0].astype(np.float64))
    return x.T @ coefficients, float(model.intercept_[0])


def _mean_difference(concept: torch.Tensor, random: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The mean difference and the bias that puts the boundary at the midpoint of the means."""
    mu_c, mu_r = concept.mean(0), random.mean(0)
    vector = mu_c - mu_r
    return vector, -float(vector @ (mu_c + mu_r) / 2)

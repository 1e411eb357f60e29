"""Testing with Concept Activation Vectors (TCAV; Kim et al. 2018, ICML).

The survey (paper 001, section 3.2, ref. 22) explains a network by how much
human concepts matter to a class. For a concept C with a CAV ``v_C^l`` at layer
``l`` (:mod:`.cav`), the conceptual sensitivity of class k at an image x is the
directional derivative of the class-k logit along the CAV (Eq. 1),
``S_{C,k,l}(x) = grad h_{l,k}(f_l(x)) . v_C^l``, and the TCAV score is the
share of class-k images with ``S > 0`` (Eq. 2). Kim et al.'s significance test
(section 3.2, and the default of their code): draw R distinct random sets, learn
one CAV of the concept against each, and one CAV of every random set against
every other (R (R - 1) random-vs-random CAVs, the null distribution); a
two-sided t-test compares the R concept scores with the R (R - 1) random ones
(``test="kim"``).

That test treats the R scores of a concept as independent draws, but all R share
the one concept set, so they scatter less than the null: on the demo ResNet-20,
concepts made of *random* ``shapes`` images came out significant for 28 % of
(concept, class) pairs with R = 10 and 33 % with R = 19, at alpha 0.05.
``test="exchangeable"`` (the default) compares like with like: each random set,
taken as a concept, has a mean score against the other random sets; under the null a
concept's mean score is one more draw of those R means, so
``t = (mean_C - m) / (s sqrt(1 + 1/R))`` with R - 1 degrees of freedom (m, s: mean
and standard deviation of the R null means; a prediction-interval t-test). Random
concepts then came out significant for 1 % (R = 10) and 6 % (R = 19) of pairs.

The gradient at the layer does not depend on the CAV: every class image costs
one forward and one backward pass (in chunks, :mod:`cnnlens.chunking`), and each
chunk's gradients are projected onto all CAVs at once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.stats import t as student_t
from scipy.stats import ttest_ind
from torch import nn

from ...chunking import chunk_size, run_chunked
from ...data.adapt import as_dataset
from ...data.base import ImageDataset
from ...errors import InputError, LayerError, TargetError
from ...hooks import capture_outputs, frozen, replace_output
from ...layers import auto_layer, get_layer
from ...placement import placement
from ..running import run_model
from ..similarity.layer_similarity import default_layers
from .cav import CAV, METHODS, cav_of_rows
from .concept_sets import Concept, as_concepts

RANDOM = "random"  # the random sets are called random_0, random_1, ...
TESTS = ("exchangeable", "kim")
TEST_NAMES = {  # how each test reads in a figure or a log line
    "exchangeable": "two-sided t-test of the concept's mean score against the random sets' means",
    "kim": "two-sided t-test against the random-vs-random CAVs (Kim et al.)",
}


@dataclass(frozen=True, eq=False)
class TCAVResult:
    """TCAV scores of each concept for each class (``[C, K, R]``: concept, class, random run).

    ``scores``: sign-count TCAV score (Kim et al. Eq. 2) of each run; ``magnitudes``:
    positive share of the summed |S| (Captum's documented magnitude score);
    ``random_scores`` ``[K, R (R - 1)]``: scores of the random-vs-random CAVs, the null
    distribution;
    ``p_values`` ``[C, K]``: two-sided test of ``scores`` against ``random_scores``
    (``test``: ``"exchangeable"`` or ``"kim"``, see the module docstring);
    ``accuracy`` ``[C, R]``: held-out accuracy of each CAV. Significant: p below
    ``alpha / tests`` (``tests`` = C * K with the Bonferroni correction, else 1).
    """

    layer: str
    method: str
    concepts: list[str]
    classes: list[int]
    class_names: list[str]
    n_images: list[int]
    scores: torch.Tensor
    magnitudes: torch.Tensor
    random_scores: torch.Tensor
    p_values: torch.Tensor
    accuracy: torch.Tensor
    random_accuracy: torch.Tensor
    alpha: float
    tests: int
    test: str = "exchangeable"

    @property
    def mean(self) -> torch.Tensor:
        """Mean TCAV score over the random runs, ``[C, K]``."""
        return self.scores.mean(-1)

    @property
    def std(self) -> torch.Tensor:
        """Standard deviation over the random runs (ddof 0, as Kim et al.), ``[C, K]``."""
        return self.scores.std(-1, correction=0)

    @property
    def significant(self) -> torch.Tensor:
        """``[C, K]`` bool: p below ``alpha / tests`` (a NaN p-value is not significant)."""
        return self.p_values < self.alpha / self.tests

    def to_dict(self) -> dict:
        """Plain values, for JSON: one row per (concept, class) and the random baseline."""
        rows = []
        significant = self.significant
        for c, concept in enumerate(self.concepts):
            for k, (cls, name) in enumerate(zip(self.classes, self.class_names, strict=True)):
                rows.append(
                    {
                        "concept": concept,
                        "class": cls,
                        "class_name": name,
                        "n_images": self.n_images[k],
                        "score": float(self.mean[c, k]),
                        "std": float(self.std[c, k]),
                        "magnitude": _plain(self.magnitudes[c, k].mean()),
                        "p_value": _plain(self.p_values[c, k]),
                        "significant": bool(significant[c, k]),
                        "cav_accuracy": float(self.accuracy[c].mean()),
                        "scores": self.scores[c, k].tolist(),
                    }
                )
        random = [
            {
                "class": cls,
                "class_name": name,
                "n_images": self.n_images[k],
                "score": float(self.random_scores[k].mean()),
                "std": float(self.random_scores[k].std(correction=0)),
                "scores": self.random_scores[k].tolist(),
            }
            for k, (cls, name) in enumerate(zip(self.classes, self.class_names, strict=True))
        ]
        return {
            "layer": self.layer,
            "cav": self.method,
            "n_random": int(self.scores.shape[-1]),
            "alpha": self.alpha,
            "test": self.test,
            "tests": self.tests,
            "rows": rows,
            "random": random,
            "random_cav_accuracy": float(self.random_accuracy.mean()),
        }


def _plain(value: torch.Tensor) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


class TCAV:
    """TCAV (Kim et al. 2018) at one layer, scikit-learn style.

    ``TCAV(layer="layer2").fit(model, {"striped": images, ...}, random=data)`` draws
    ``n_random`` disjoint random sets ``random_0 ...`` of ``random_size`` images (default: as
    many as the largest concept) from ``random`` (default: the data set the concepts come
    from, e.g. :func:`~.concepts.shapes_concepts`) and learns one CAV of each concept against
    each random set (without the concept's own images), and one of each random set against
    each other, for the null distribution. ``cav``: ``"logistic"`` or
    ``"mean"`` (:func:`~.cav.learn_cav`, ``held_out``, ``C``). ``score(model, images,
    targets)`` then gives a :class:`TCAVResult`. ``layer="auto"``: the last spatial map
    (:func:`~cnnlens.layers.auto_layer`); ``"mid"``: the block two thirds of the way
    through (:func:`mid_layer`). ``test``: the significance test, ``"exchangeable"``
    (calibrated for concepts that share one image set) or Kim et al.'s ``"kim"``; see the
    module docstring. All draws come from ``seed``.

    Learned attributes: ``layer_``, ``concepts_`` (names), ``concept_sets_``
    (:class:`~.concepts.Concept`), ``random_sets_`` (Concepts of ``random_data_``),
    ``random_size_``, ``cavs_`` (``{name: [CAV] * n_random}``), ``random_cavs_`` (random_i
    against random_j for every i != j, in that order), ``accuracy_`` ``[C, R]``,
    ``random_accuracy_`` ``[R (R - 1)]``, ``n_features_``.
    """

    def __init__(
        self,
        layer: str = "mid",
        *,
        n_random: int = 10,
        cav: str = "logistic",
        random_size: int | None = None,
        held_out: float = 0.33,
        C: float = 1.0,
        alpha: float = 0.05,
        bonferroni: bool = False,
        test: str = "exchangeable",
        seed: int = 0,
        batch_size: int | None = None,
    ) -> None:
        self.layer = layer
        self.n_random = n_random
        self.cav = cav
        self.random_size = random_size
        self.held_out = held_out
        self.C = C
        self.alpha = alpha
        self.bonferroni = bonferroni
        self.test = test
        self.seed = seed
        self.batch_size = batch_size

    def fit(
        self,
        model: nn.Module,
        concepts: Mapping[str, object] | Sequence[Concept],
        random: object | None = None,
        *,
        desc: str | None = None,
    ) -> TCAV:
        """Learn the CAVs of ``concepts`` (``{name: images}``: see
        :func:`~.concepts.as_concept`) at the layer; ``random``: anything
        :func:`~cnnlens.data.as_dataset` accepts."""
        self._check_params()
        sets = as_concepts(concepts)
        pool = _pool(sets, random)
        device, dtype = placement(model)
        probe = pool.tensors(torch.arange(1))[0].to(device, dtype)
        if self.layer == "auto":
            layer = auto_layer(model, probe)
        elif self.layer == "mid":
            layer = mid_layer(model, probe)
        else:
            layer = self.layer
        get_layer(model, layer)
        gen = torch.Generator().manual_seed(self.seed)
        size = self.random_size if self.random_size is not None else max(map(len, sets))
        if self.n_random * size > len(pool):
            raise InputError(
                f"{pool.name} has {len(pool)} images, fewer than n_random={self.n_random} "
                f"distinct random sets of random_size={size} need ({self.n_random * size})"
            )
        order = torch.randperm(len(pool), generator=gen)[: self.n_random * size]
        randoms = [
            Concept(f"{RANDOM}_{i}", pool, part.sort().values)
            for i, part in enumerate(order.split(size))
        ]
        options = {"batch_size": self.batch_size, "desc": desc}
        pool_acts = _activations(model, pool, order, layer, "the random sets", **options)
        row = torch.full((len(pool),), -1, dtype=torch.long)
        row[order] = torch.arange(len(order))

        def learn(concept: Concept, acts: torch.Tensor, other: Concept) -> CAV:
            inside = concept.indices if concept.data is pool else torch.empty(0).long()
            part = other.indices[~torch.isin(other.indices, inside)]
            cav = cav_of_rows(
                acts,
                torch.arange(len(acts)),
                pool_acts,
                row[part],
                method=self.cav,
                held_out=self.held_out,
                C=self.C,
                generator=gen,
                name=concept.name,
                counterpart=other.name,
            )
            return _in_data_sets(cav, concept.indices, part)

        self.cavs_ = {}
        for concept in sets:
            what = f"concept {concept.name!r}"
            acts = _activations(model, concept.data, concept.indices, layer, what, **options)
            if acts.shape[1] != pool_acts.shape[1]:
                raise InputError(
                    f"concept {concept.name!r} gives {acts.shape[1]} values at layer {layer!r} "
                    f"but the random images give {pool_acts.shape[1]}; give images of one size"
                )
            self.cavs_[concept.name] = [learn(concept, acts, other) for other in randoms]
        pairs = {}  # random_i against random_j; j against i is the same fit, negated
        for i, one in enumerate(randoms):
            for j, other in enumerate(randoms[i + 1 :], i + 1):
                pairs[i, j] = learn(one, pool_acts[row[one.indices]], other)
                pairs[j, i] = _reversed(pairs[i, j])
        self.random_cavs_ = [
            pairs[i, j] for i in range(len(randoms)) for j in range(len(randoms)) if i != j
        ]
        self.layer_ = layer
        self.concepts_ = [c.name for c in sets]
        self.concept_sets_ = sets
        self.random_sets_ = randoms
        self.random_data_ = pool
        self.random_size_ = size
        self.n_features_ = int(pool_acts.shape[1])
        self.accuracy_ = torch.tensor(
            [[cav.accuracy for cav in self.cavs_[name]] for name in self.concepts_],
            dtype=torch.float64,
        )
        self.random_accuracy_ = torch.tensor(
            [cav.accuracy for cav in self.random_cavs_], dtype=torch.float64
        )
        return self

    def score(
        self,
        model: nn.Module,
        data: object,
        targets: int | Sequence[int] | torch.Tensor | None = None,
        *,
        desc: str | None = None,
    ) -> TCAVResult:
        """TCAV scores on the images of ``data`` (anything :func:`~cnnlens.data.as_dataset`
        accepts), each taken as an image of its class in ``targets``: None = its label, an int
        = that class for every image, or one class per image. Scores are per target class."""
        self._check_fitted()
        data = as_dataset(data)
        t = _targets(data, targets)
        vectors = torch.stack(
            [cav.vector for name in self.concepts_ for cav in self.cavs_[name]]
            + [cav.vector for cav in self.random_cavs_]
        )
        derivatives = directional_derivatives(
            model, data, self.layer_, t, vectors, batch_size=self.batch_size, desc=desc
        ).double()
        classes = t.unique().tolist()
        signs, magnitudes = [], []
        for k in classes:
            s = derivatives[t == k]
            signs.append((s > 0).double().mean(0))
            magnitudes.append(s.clamp_min(0).sum(0) / s.abs().sum(0))  # 0 / 0: NaN
        signs, magnitudes = torch.stack(signs), torch.stack(magnitudes)  # [K, C*R + R(R-1)]
        n_concepts, runs = len(self.concepts_), len(self.random_sets_)
        split = n_concepts * runs

        def per_concept(values: torch.Tensor) -> torch.Tensor:
            return values[:, :split].reshape(len(classes), n_concepts, runs).transpose(0, 1)

        scores, random_scores = per_concept(signs), signs[:, split:]
        p = p_values(scores, random_scores, self.test)
        names = list(data.classes)
        return TCAVResult(
            layer=self.layer_,
            method=self.cav,
            concepts=list(self.concepts_),
            classes=classes,
            class_names=[names[k] if k < len(names) else str(k) for k in classes],
            n_images=[int((t == k).sum()) for k in classes],
            scores=scores.contiguous(),
            magnitudes=per_concept(magnitudes).contiguous(),
            random_scores=random_scores.contiguous(),
            p_values=p,
            accuracy=self.accuracy_.clone(),
            random_accuracy=self.random_accuracy_.clone(),
            alpha=float(self.alpha),
            tests=len(self.concepts_) * len(classes) if self.bonferroni else 1,
            test=self.test,
        )

    # --- helpers ------------------------------------------------------
    def _check_params(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise InputError(f"layer must be a layer name, 'mid' or 'auto', got {self.layer!r}")
        if _not_int(self.n_random) or self.n_random < 2:
            raise InputError(
                f"n_random must be an integer >= 2 (the t-test needs two runs), got "
                f"{self.n_random!r}"
            )
        if self.cav not in METHODS:
            raise InputError(f"cav must be one of {METHODS}, got {self.cav!r}")
        if self.random_size is not None and (_not_int(self.random_size) or self.random_size < 2):
            raise InputError(
                f"random_size must be an integer >= 2 or None, got {self.random_size!r}"
            )
        if _not_float(self.held_out) or not 0 < self.held_out < 1:
            raise InputError(f"held_out must be a share in (0, 1), got {self.held_out!r}")
        if _not_float(self.C) or not self.C > 0:
            raise InputError(f"C must be a positive number, got {self.C!r}")
        if _not_float(self.alpha) or not 0 < self.alpha < 1:
            raise InputError(f"alpha must lie in (0, 1), got {self.alpha!r}")
        if self.test not in TESTS:
            raise InputError(f"test must be one of {TESTS}, got {self.test!r}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "cavs_"):
            raise InputError("this TCAV is not fitted yet; call fit(model, concepts)")

    def __repr__(self) -> str:
        fitted = f", concepts_={self.concepts_}" if hasattr(self, "cavs_") else ""
        return f"TCAV(layer={self.layer!r}, n_random={self.n_random}, cav={self.cav!r}{fitted})"


def p_values(scores: torch.Tensor, random_scores: torch.Tensor, test: str) -> torch.Tensor:
    """Two-sided p-values ``[C, K]`` of the concept scores ``[C, K, R]`` against the
    random-vs-random scores ``[K, R (R - 1)]`` (random_i against random_j, i != j, in
    row-major order). ``"kim"``: Student's two-sample t-test of the R concept scores
    against all R (R - 1) random ones (Kim et al. 2018). ``"exchangeable"``: the concept's
    mean score against the R means of the random sets taken as concepts, a
    prediction-interval t-test with R - 1 degrees of freedom (module docstring).
    A NaN p-value (every score equal) is never significant."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # constant samples: p is NaN
        if test == "kim":
            p = ttest_ind(scores.numpy(), random_scores[None].numpy(), axis=-1).pvalue
            return torch.as_tensor(np.asarray(p, dtype=np.float64)).reshape(scores.shape[:2])
        runs = scores.shape[-1]
        null = random_scores.double().reshape(-1, runs, runs - 1).mean(-1)  # [K, R]
        spread = null.std(-1, correction=1) * math.sqrt(1 + 1 / runs)
        t = (scores.double().mean(-1) - null.mean(-1)) / spread  # [C, K]; 0 / 0: NaN
        return torch.from_numpy(2 * student_t.sf(np.abs(t.numpy()), runs - 1))


def mid_layer(model: nn.Module, probe: torch.Tensor) -> str:
    """The block two thirds of the way through the model (:func:`default_layers`; for a
    CIFAR ResNet-20, ``layer2.2``). The last spatial map is a poor TCAV layer in a network
    that pools it globally into a linear head: the gradient of a logit there is the same
    for every image, so every image of a class gets the same sign and the score is 0 or 1."""
    layers = default_layers(model, probe)
    return layers[(2 * len(layers)) // 3]


def _not_int(value: object) -> bool:
    return not isinstance(value, int) or isinstance(value, bool)


def _not_float(value: object) -> bool:
    return not isinstance(value, int | float) or isinstance(value, bool)


def _pool(sets: list[Concept], random: object | None) -> ImageDataset:
    """The data set random images are drawn from: ``random``, else the concepts' own."""
    if random is not None:
        return as_dataset(random)
    sources = {id(c.data): c.data for c in sets}
    if len(sources) != 1:
        raise InputError(
            "give random= (a data set to draw random images from): the concepts come from "
            f"{len(sources)} different data sets, so there is no one to default to"
        )
    return next(iter(sources.values()))


def _in_data_sets(cav: CAV, concept: torch.Tensor, random: torch.Tensor) -> CAV:
    """``cav`` with its row positions turned into indices of the two data sets."""
    return replace(
        cav,
        concept_train=concept[cav.concept_train],
        concept_test=concept[cav.concept_test],
        random_train=random[cav.random_train],
        random_test=random[cav.random_test],
    )


def _reversed(cav: CAV) -> CAV:
    """The CAV of ``cav``'s counterpart against its concept, on the same split: logistic
    regression and the mean difference are symmetric in the two sets, so it is ``-vector``
    with the same held-out accuracy (Kim et al.'s code fits it again; the same optimum)."""
    return CAV(
        cav.counterpart,
        cav.concept,
        -cav.vector,
        cav.accuracy,
        cav.random_train,
        cav.random_test,
        cav.concept_train,
        cav.concept_test,
    )


def _targets(data: ImageDataset, targets: object) -> torch.Tensor:
    """One class per image of ``data``, long ``[N]`` on the CPU."""
    n = len(data)
    if targets is None:
        t = data.labels.long().cpu()
    elif isinstance(targets, bool):
        raise TargetError(f"targets must be None, an int or one class per image, got {targets!r}")
    elif isinstance(targets, int):
        t = torch.full((n,), targets, dtype=torch.long)
    else:
        try:
            t = torch.as_tensor(targets).cpu().flatten()
        except (TypeError, ValueError, RuntimeError):
            kind = type(targets).__name__
            raise TargetError(
                f"targets must be None, an int or one class per image, got a {kind}"
            ) from None
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TargetError(f"targets must be integer classes, got {t.dtype}")
        if t.numel() != n:
            raise TargetError(f"targets must hold one class per image ({n}), got {t.numel()}")
        t = t.long()
    if n and int(t.min()) < 0:
        raise TargetError(f"target classes must be >= 0, got {sorted(set(t.tolist()))[:10]}")
    return t


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits = run_model(model, x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(f"the model must return logits [N, K], got {shape}")
    return logits


def _layer_value(out: object, layer: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        kind = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise LayerError(f"layer {layer!r} gives {kind}; TCAV needs a tensor [N, ...]")
    return out


def _activations(
    model: nn.Module,
    data: ImageDataset,
    indices: torch.Tensor,
    layer: str,
    what: str,
    *,
    batch_size: int | None,
    desc: str | None,
) -> torch.Tensor:
    """Flattened activations of ``layer`` for images ``indices`` of ``data``, float64 on the
    CPU ``[n, P]`` (one forward per chunk, no gradients)."""
    device, dtype = placement(model)
    with frozen(model):
        probe = data.tensors(indices[:1])[0].to(device, dtype)
        size = chunk_size(model, probe, backward=False, batch_size=batch_size)
        with capture_outputs(model, [layer]) as store:

            def run(start: int, stop: int) -> torch.Tensor:
                x = data.tensors(indices[start:stop])[0].to(device, dtype)
                store.clear()
                with torch.no_grad():
                    _forward(model, x)
                if layer not in store:
                    raise LayerError(
                        f"layer {layer!r} of {type(model).__name__} did not run in its forward"
                    )
                return _layer_value(store[layer], layer).detach().flatten(1).cpu().double()

            acts = run_chunked(run, len(indices), size, desc=desc)
    bad = int((~torch.isfinite(acts)).any(1).sum())
    if bad:
        raise InputError(
            f"layer {layer!r} gives NaN or infinite activations on {bad} image(s) of {what}"
        )
    return acts


def directional_derivatives(
    model: nn.Module,
    data: object,
    layer: str,
    targets: torch.Tensor,
    vectors: torch.Tensor,
    *,
    batch_size: int | None = None,
    desc: str | None = None,
) -> torch.Tensor:
    """``S[i, j]`` = gradient of logit ``targets[i]`` of image i with respect to the
    flattened output of ``layer``, dotted with ``vectors[j]`` (Kim et al. Eq. 1), ``[N, M]``.

    One forward and backward pass per chunk of images; the layer's output enters the rest
    of the network as a copy of a leaf tensor, so the backward stops at the layer and an
    in-place operation after it cannot change the gradient.
    """
    data = as_dataset(data)
    get_layer(model, layer)
    device, dtype = placement(model)
    targets = torch.as_tensor(targets).long().cpu().flatten()
    if targets.numel() != len(data):
        raise TargetError(f"targets must hold one class per image ({len(data)}), got {targets}")
    leaves: list[torch.Tensor] = []

    def detach(out: object) -> torch.Tensor:
        leaf = _layer_value(out, layer).detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf.clone()

    with frozen(model):
        probe = data.tensors(torch.arange(1))[0].to(device, dtype)
        size = chunk_size(model, probe, backward=True, batch_size=batch_size)
        with replace_output(model, layer, detach):

            def run(start: int, stop: int) -> torch.Tensor:
                x = data.tensors(torch.arange(start, stop))[0].to(device, dtype)
                t = targets[start:stop].to(device)
                leaves.clear()
                with torch.enable_grad():
                    logits = _forward(model, x)
                    if not leaves:
                        name = type(model).__name__
                        raise LayerError(f"layer {layer!r} of {name} did not run in its forward")
                    if len(leaves) > 1:
                        raise LayerError(
                            f"layer {layer!r} runs {len(leaves)} times per forward; TCAV needs "
                            "a layer that runs once"
                        )
                    if int(t.min()) < 0 or int(t.max()) >= logits.shape[1]:
                        raise TargetError(
                            f"target classes must lie in [0, {logits.shape[1]}) for this model, "
                            f"got {sorted(set(t.tolist()))[:10]}"
                        )
                    picked = logits.gather(1, t[:, None]).sum()
                    (grad,) = torch.autograd.grad(picked, leaves[0])
                grad = grad.flatten(1)
                if grad.shape[1] != vectors.shape[1]:
                    raise InputError(
                        f"layer {layer!r} gives {grad.shape[1]} values per image but the CAVs "
                        f"have {vectors.shape[1]}; score images of the size they were fitted on"
                    )
                if not torch.isfinite(grad).all():
                    raise InputError(
                        f"the gradient at layer {layer!r} is NaN or infinite on images "
                        f"[{start}, {stop})"
                    )
                return grad @ vectors.to(grad).T

            out = run_chunked(run, len(data), size, desc=desc)
    leaves.clear()
    return out

"""A global surrogate: a decision tree fitted to the network's predictions.

The survey (paper 001, section 3.4, "model processing") explains a network
as a whole by a simple model that imitates its decision function, and names
decision trees (DeepRED, CRED) as the tool of choice. Following Craven &
Shavlik 1996 ("Extracting Tree-Structured Representations of Trained
Networks"), the tree learns the network's predicted class ``argmax_k f_k(x)``
(not the label) from the penultimate features, or from interpretable features
a user gives per image; its *fidelity* is the share of held-out images on
which tree and network agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.tree import DecisionTreeClassifier, export_text
from torch import nn

from ...data.adapt import as_dataset
from ...errors import InputError
from ..features import Features, collect_features


class SurrogateTree:
    """Decision tree imitating ``model``'s predictions (scikit-learn style).

    ``SurrogateTree(max_depth=4).fit(model, train)`` then ``score(model, test)``.
    ``max_depth``, ``min_samples_leaf``, ``criterion`` and ``random_state`` go to
    :class:`sklearn.tree.DecisionTreeClassifier`. Learned attributes: ``tree_``
    (the fitted classifier), ``depth_``, ``n_leaves_``, ``feature_names_``,
    ``classes_`` (the network's predicted classes seen in training),
    ``train_fidelity_``, ``rules_`` (:func:`sklearn.tree.export_text`) and, after
    :meth:`score`, ``fidelity_``.
    """

    def __init__(
        self,
        max_depth: int | None = 4,
        *,
        min_samples_leaf: int = 1,
        criterion: str = "gini",
        random_state: int = 0,
        batch_size: int | None = None,
    ) -> None:
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.criterion = criterion
        self.random_state = random_state
        self.batch_size = batch_size

    def fit(
        self,
        model: nn.Module,
        train: object,
        *,
        features: torch.Tensor | np.ndarray | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> SurrogateTree:
        """Fit the tree to ``model``'s predicted classes on ``train`` (anything
        :func:`~cnnlens.data.as_dataset` accepts). Inputs: the penultimate features
        (named ``penultimate[j]``), or ``features`` ``[N, F]`` given per image of
        ``train`` (named by ``feature_names``, default ``x[j]``)."""
        self._check_params()
        data = as_dataset(train)
        net = collect_features(model, data, batch_size=self.batch_size)
        inputs = self._inputs(net, features, len(data), "train")
        self.feature_names_ = self._feature_names(inputs.shape[1], features, feature_names)
        self.uses_penultimate_ = features is None
        self.class_names_ = list(data.classes)
        predicted = net.predicted.cpu().numpy()
        self.tree_ = DecisionTreeClassifier(
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            criterion=self.criterion,
            random_state=self.random_state,
        ).fit(inputs, predicted)
        self.classes_ = self.tree_.classes_
        self.depth_ = int(self.tree_.get_depth())
        self.n_leaves_ = int(self.tree_.get_n_leaves())
        self.train_fidelity_ = float((self.tree_.predict(inputs) == predicted).mean())
        self.rules_ = export_text(
            self.tree_,
            feature_names=self.feature_names_,
            class_names=[self._class_name(c) for c in self.classes_],
            max_depth=max(self.depth_, 1),
        )
        return self

    def predict(
        self, model: nn.Module, data: object, *, features: torch.Tensor | np.ndarray | None = None
    ) -> np.ndarray:
        """The tree's class for each image of ``data`` (inputs as in :meth:`fit`)."""
        tree_pred, _net_pred = self._both(model, data, features)
        return tree_pred

    def score(
        self, model: nn.Module, test: object, *, features: torch.Tensor | np.ndarray | None = None
    ) -> float:
        """Fidelity on ``test``: the share of images where the tree's class equals the
        network's ``argmax``; also stored as ``fidelity_``."""
        tree_pred, net_pred = self._both(model, test, features)
        self.fidelity_ = float((tree_pred == net_pred).mean())
        return self.fidelity_

    # --- helpers ------------------------------------------------------
    def _both(self, model, data, features) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        if (features is None) != self.uses_penultimate_:
            fitted_on = "penultimate features" if self.uses_penultimate_ else "given features"
            raise InputError(
                f"this SurrogateTree was fitted on {fitted_on}; give the same kind "
                f"({'no' if self.uses_penultimate_ else 'a'} features= argument)"
            )
        data = as_dataset(data)
        net = collect_features(model, data, batch_size=self.batch_size)
        inputs = self._inputs(net, features, len(data), data.name)
        if inputs.shape[1] != len(self.feature_names_):
            raise InputError(
                f"the tree reads {len(self.feature_names_)} features per image, got "
                f"{inputs.shape[1]}"
            )
        return self.tree_.predict(inputs), net.predicted.cpu().numpy()

    def _check_params(self) -> None:
        depth = self.max_depth
        if depth is not None and (
            not isinstance(depth, int) or isinstance(depth, bool) or depth < 1
        ):
            raise InputError(f"max_depth must be a positive integer or None, got {depth!r}")
        leaf = self.min_samples_leaf
        if not isinstance(leaf, int) or isinstance(leaf, bool) or leaf < 1:
            raise InputError(f"min_samples_leaf must be a positive integer, got {leaf!r}")
        if self.criterion not in ("gini", "entropy", "log_loss"):
            raise InputError(
                f"criterion must be 'gini', 'entropy' or 'log_loss', got {self.criterion!r}"
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "tree_"):
            raise InputError("this SurrogateTree is not fitted yet; call fit(model, train)")

    @staticmethod
    def _inputs(net: Features, features, n: int, where: str) -> np.ndarray:
        if features is None:
            return net.features.detach().double().cpu().numpy()
        values = torch.as_tensor(features).detach().cpu()
        if values.dim() != 2 or values.shape[0] != n:
            raise InputError(
                f"features must be [N, F] with one row per image of {where} (N = {n}), got "
                f"shape {tuple(values.shape)}"
            )
        if values.is_complex() or not torch.isfinite(values.double()).all():
            raise InputError(f"features for {where} must be finite real numbers")
        return values.double().numpy()

    @staticmethod
    def _feature_names(width: int, features, names: Sequence[str] | None) -> list[str]:
        if names is None:
            stem = "penultimate" if features is None else "x"
            return [f"{stem}[{j}]" for j in range(width)]
        names = [str(name) for name in names]
        if len(names) != width:
            raise InputError(
                f"{len(names)} feature_names for {width} features; give one per column"
            )
        return names

    def _class_name(self, c: int) -> str:
        return self.class_names_[c] if 0 <= c < len(self.class_names_) else str(c)

    def __repr__(self) -> str:
        fitted = (
            f", depth_={self.depth_}, n_leaves_={self.n_leaves_}" if hasattr(self, "tree_") else ""
        )
        return f"SurrogateTree(max_depth={self.max_depth}{fitted})"

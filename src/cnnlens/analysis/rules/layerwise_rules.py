"""Rule extraction layer by layer (DeepRED-style), beside the global surrogate tree.

The survey (paper 001, section 3.4, "model processing") names DeepRED (Zilke et al. 2016)
next to surrogate trees: instead of one tree from the inputs to the output, DeepRED fits
a tree per layer, each predicting the next layer's discretised units from the previous
layer's, and composes them into rules on the input features. Here, with scikit-learn
trees:

- each watched layer's output is globally average pooled per channel and discretised
  at the channel's median over the training images (1 = above, 0 = not);
- the first layer's units are predicted from the input features (e.g. ``shapes``'
  binary attributes), each later layer's units from the previous layer's, one tree per
  unit; the network's predicted class from the last layer's units, one tree;
- the composed rule set predicts by running the trees in order. With binary input
  features (at most :data:`MAX_ENUMERATED` of them) it is also written as rules on the
  input features: the composition is tabulated over every input vector and a decision
  tree fitted exactly to that table gives one rule per leaf (``rules_``).

Fidelity is the share of held-out images on which the composition and the network agree,
comparable with :class:`~cnnlens.analysis.SurrogateTree` fitted on the same features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.tree import DecisionTreeClassifier, export_text
from torch import nn

from ...chunking import run_chunked
from ...data.adapt import as_dataset
from ...errors import InputError
from ...hooks import capture_outputs, frozen
from ...params import Param, check_params
from ...placement import placement
from ..running import run_model

MAX_ENUMERATED = 16  # binary input features tabulated for the composed rules (2^16 rows)

PARAMS = {
    "max_depth": Param("int", 4, min=1, help="depth limit of every tree"),
    "min_samples_leaf": Param("int", 5, min=1, help="images per leaf of every tree"),
    "random_state": Param("int", 0, help="seed of scikit-learn's trees"),
}


def pooled_units(
    model: nn.Module, data, layers: Sequence[str], *, chunk: int = 256
) -> dict[str, torch.Tensor]:
    """``{layer: [N, C]}``: each layer's output averaged over its spatial positions."""
    data = as_dataset(data)
    device, dtype = placement(model)

    def part(a: int, b: int):
        x, _ = data.tensors(range(a, b))
        with capture_outputs(model, layers) as store:
            logits = run_model(model, x.to(device=device, dtype=dtype))
        pooled = [store[n].flatten(2).mean(2) if store[n].dim() > 2 else store[n] for n in layers]
        return (*(p.float().cpu() for p in pooled), logits.argmax(1).cpu())

    with frozen(model), torch.no_grad():
        out = run_chunked(part, len(data), chunk)
    units = dict(zip(layers, out[:-1], strict=True))
    units["__predicted__"] = out[-1]
    return units


class LayerwiseRules:
    """DeepRED-style rules (see the module docstring), scikit-learn style.

    ``LayerwiseRules(["layer2", "layer3"]).fit(model, train, features=attrs)`` then
    ``score(model, test, features=test_attrs)``. Learned: ``thresholds_`` (per layer, the
    medians), ``trees_`` (per layer, one tree per unit), ``output_tree_``,
    ``train_fidelity_``, ``n_tree_leaves_`` (all trees' leaves), ``feature_names_``,
    ``rules_`` / ``n_rules_`` (composed rules on binary inputs, else ``None``) and, after
    :meth:`score`, ``fidelity_``.
    """

    def __init__(
        self,
        layers: Sequence[str],
        *,
        max_depth: int = 4,
        min_samples_leaf: int = 5,
        random_state: int = 0,
    ) -> None:
        self.layers = list(layers)
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    def _tree(self) -> DecisionTreeClassifier:
        return DecisionTreeClassifier(
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            random_state=self.random_state,
        )

    def _check(self, model: nn.Module) -> None:
        check_params(
            "LayerwiseRules",
            {
                "max_depth": self.max_depth,
                "min_samples_leaf": self.min_samples_leaf,
                "random_state": self.random_state,
            },
            PARAMS,
        )
        if not self.layers:
            raise InputError("LayerwiseRules needs at least one layer name")
        from ...layers import get_layer

        for name in self.layers:
            get_layer(model, name)  # a LayerError naming the layer and the choices

    @staticmethod
    def _features(features, n: int) -> np.ndarray:
        if features is None:
            raise InputError("give features= (input features per image, e.g. attributes)")
        values = torch.as_tensor(features).detach().cpu().double()
        if values.dim() != 2 or values.shape[0] != n:
            raise InputError(f"features must be [N={n}, F], got shape {tuple(values.shape)}")
        return values.numpy()

    def fit(
        self,
        model: nn.Module,
        train,
        *,
        features,
        feature_names: Sequence[str] | None = None,
    ) -> LayerwiseRules:
        """Fit the chain of trees on ``train`` with the input ``features`` ``[N, F]``."""
        self._check(model)
        data = as_dataset(train)
        inputs = self._features(features, len(data))
        units = pooled_units(model, data, self.layers)
        self.thresholds_ = {n: units[n].median(0).values for n in self.layers}
        binary = [(units[n] > self.thresholds_[n]).numpy().astype(np.int8) for n in self.layers]
        self.trees_ = []
        source = inputs
        for target in binary:
            self.trees_.append(
                [self._tree().fit(source, target[:, j]) for j in range(target.shape[1])]
            )
            source = target
        predicted = units["__predicted__"].numpy()
        self.output_tree_ = self._tree().fit(source, predicted)
        f = inputs.shape[1]
        self.feature_names_ = (
            list(feature_names) if feature_names else [f"x[{j}]" for j in range(f)]
        )
        if len(self.feature_names_) != f:
            raise InputError(f"{len(self.feature_names_)} feature names for {f} features")
        self.class_names_ = list(data.classes)
        self.train_fidelity_ = float((self.predict(inputs) == predicted).mean())
        self.n_tree_leaves_ = int(
            sum(t.get_n_leaves() for layer in self.trees_ for t in layer)
            + self.output_tree_.get_n_leaves()
        )
        self._compose_rules(inputs)
        return self

    def predict(self, features) -> np.ndarray:
        """The composed trees' class for input features ``[N, F]``."""
        if not hasattr(self, "output_tree_"):
            raise InputError("this LayerwiseRules is not fitted yet; call fit(model, train, ...)")
        source = np.asarray(features, dtype=np.float64)
        for layer in self.trees_:
            source = np.stack([t.predict(source) for t in layer], axis=1)
        return self.output_tree_.predict(source)

    def score(self, model: nn.Module, test, *, features) -> float:
        """Fidelity on ``test``: the share of images where the composition's class equals
        the network's ``argmax``; also stored as ``fidelity_``."""
        data = as_dataset(test)
        inputs = self._features(features, len(data))
        with frozen(model), torch.no_grad():
            predicted = pooled_units(model, data, self.layers[:1])["__predicted__"].numpy()
        self.fidelity_ = float((self.predict(inputs) == predicted).mean())
        return self.fidelity_

    def _compose_rules(self, inputs: np.ndarray) -> None:
        """Rules on the inputs: with binary features, the composition tabulated over all
        2^F input vectors and a tree fitted exactly to it (one rule per leaf)."""
        f = inputs.shape[1]
        self.rules_, self.n_rules_ = None, None
        if f > MAX_ENUMERATED or not np.isin(inputs, (0.0, 1.0)).all():
            return
        table = ((np.arange(2**f)[:, None] >> np.arange(f)[None, :]) & 1).astype(np.float64)
        composed = self.predict(table)
        exact = DecisionTreeClassifier(random_state=self.random_state).fit(table, composed)
        self.composed_tree_ = exact
        self.n_rules_ = int(exact.get_n_leaves())
        self.rules_ = export_text(
            exact,
            feature_names=self.feature_names_,
            class_names=[self._class_name(c) for c in exact.classes_],
            max_depth=max(int(exact.get_depth()), 1),
        )

    def _class_name(self, c) -> str:
        names = getattr(self, "class_names_", [])
        return names[int(c)] if 0 <= int(c) < len(names) else str(c)

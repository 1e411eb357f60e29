"""The metric registry: ids, facts, old spellings, and results stored under old names."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from cnnlens import metrics
from cnnlens.errors import InputError
from cnnlens.metrics import registry
from cnnlens.metrics.evaluate import resolve_metrics

TABLE = [
    "deletion", "insertion", "degradation-small", "degradation-large", "bbox-score",
    "pointing-game", "energy-pointing-game", "randomisation", "completeness",
]  # fmt: skip
FAITHFULNESS = [
    "faithfulness-correlation",
    "faithfulness-estimate",
    "monotonicity-arya",
    "monotonicity-nguyen",
    "irof",
    "selectivity",
]  # optional metrics of issue 33, faithfulness group
OPTIONAL = {"max-sensitivity", "infidelity", "road"}
# issue 33, robustness / localisation / complexity group
OPTIONAL_ROBUSTNESS_LOCALISATION_COMPLEXITY = {
    "relevance-mass-accuracy", "relevance-rank-accuracy", "top-k-intersection",
    "attribution-localisation", "auc", "sparseness", "complexity", "effective-complexity",
    "avg-sensitivity", "local-lipschitz-estimate", "continuity", "relative-input-stability",
    "relative-output-stability",
}  # fmt: skip
AXIOMS = [
    "sensitivity-n",
    "sufficiency",
    "random-logit",
    "non-sensitivity",
    "input-invariance",
]  # optional metrics of issue 33, axioms group


def test_every_metric_carries_its_facts():
    assert metrics.names(optional=False) == TABLE
    assert set(metrics.names()) == {
        *TABLE,
        *OPTIONAL,
        *FAITHFULNESS,
        *OPTIONAL_ROBUSTNESS_LOCALISATION_COMPLEXITY,
        *AXIOMS,
    }
    for name in metrics.names():
        m = metrics.get(name)
        assert m.name == name and "_" not in name and m.description
        assert m.kind in ("scalar", "curve") and set(m.needs) <= set(registry.NEEDS)
        assert m.default == (name in TABLE)
    assert metrics.get("deletion").lower_is_better and not metrics.get("insertion").lower_is_better
    assert metrics.get("road").kind == "curve" and metrics.get("pointing-game").kind == "scalar"
    assert "ground-truth" in metrics.get("bbox-score").needs
    assert "method" in metrics.get("max-sensitivity").needs
    assert "complete-method" in metrics.get("completeness").needs
    assert set(metrics.get("pointing-game").params) == {"tolerance"}
    assert registry.lower_is_better("randomisation-final")
    assert "degradation-small-morf" in registry.plotted_curves()


def test_unknown_metric_names_the_close_ones():
    with pytest.raises(InputError, match="pointing-game"):
        metrics.get("pointing-gam")


def test_old_spellings_are_mapped_with_one_deprecation_note(capsys):
    registry._WARNED.discard("energy_pointing_game")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert metrics.get("energy_pointing_game").name == "energy-pointing-game"
        assert resolve_metrics("deletion,energy_pointing_game") == [
            "deletion",
            "energy-pointing-game",
        ]
    assert [w.category for w in caught] == [DeprecationWarning]
    assert capsys.readouterr().err.count("'energy_pointing_game' is deprecated") == 1
    assert registry.canonical_key("degradation_small/curve_morf") == "degradation-small/curve_morf"
    assert registry.canonical_key("degradation_large_lerf") == "degradation-large-lerf"
    assert registry.canonical_key("randomisation_final/values") == "randomisation-final/values"


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()  # fmt: skip


def test_a_store_written_with_old_names_reads_back_under_the_new_ids(tmp_path, shapes_test):
    """A job store from before the hyphenated ids (underscored metric names in its tables)
    is read back by cnnlens evaluate's reader under the current ids, values unchanged."""
    import pandas as pd

    from cnnlens.jobs import run
    from cnnlens.jobs.evaluation import evaluation
    from cnnlens.store import layout

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 8),
    ).eval()  # fmt: skip
    store = tmp_path / "store"
    run(model=model, store=store, data=shapes_test.subset(range(4)), methods={"saliency": {}},
        metrics=["pointing-game", "degradation-small"], sanity_images=0, progress=False,
        compile="off")  # fmt: skip
    first = evaluation(store)
    for file in (store / layout.METRICS).glob("*.parquet"):
        table = pd.read_parquet(file)
        table["metric"] = table["metric"].str.replace("-", "_")
        table.to_parquet(file, index=False)
    again = evaluation(store)
    assert list(again.values) == ["saliency"]
    for method in ("saliency",):
        assert set(again.values[method]) == {"pointing-game", "degradation-small"}
        for name, vals in first.values[method].items():
            assert torch.equal(again.values[method][name], vals), (method, name)
        assert "degradation-small-morf" in again.curves[method]

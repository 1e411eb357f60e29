"""Checks that a data set poses the task it claims to.

- :func:`pixel_logistic_regression`: accuracy of a linear classifier on raw
  pixels of ``shapes``; far below a CNN's, so the task needs spatial reasoning.

A model's accuracy with the object left out is
:func:`cnnlens.train.loop.object_removed_accuracy` (it evaluates the model).
"""

from __future__ import annotations

from .shapes import ShapesDataset


def pixel_logistic_regression(
    *, n_train: int = 10_000, n_test: int = 2_000, size: int = 32, seed: int = 0, C: float = 0.01
) -> float:
    """Test accuracy of an L2 logistic regression on standardised raw pixels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train = ShapesDataset("train", n=n_train, size=size, seed=seed)
    test = ShapesDataset("test", n=n_test, size=size, seed=seed)
    xtr = train.raw_batch().flatten(1).numpy()
    xte = test.raw_batch().flatten(1).numpy()
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=C, max_iter=300)
    clf.fit(scaler.transform(xtr), train.labels.numpy())
    return float(clf.score(scaler.transform(xte), test.labels.numpy()))

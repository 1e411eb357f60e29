"""The papers' systems, side by side and laid out alike.

Each study package holds its parts, their training (through :func:`cnnlens.train.fit` and
:func:`cnnlens.runs.saved_run`: train or reuse by identity, written atomically), a study
that measures and returns results (the faces render them), and a ``loaders.py`` that
teaches :func:`cnnlens.load` to open what it saves:

- :mod:`.drib` paper 000, DRIB: dynamic per-input channel gating with MAC accounting;
- :mod:`.decompose` paper 002, "Decomposing the Deep": class-specific filters and the
  decomposed final layer;
- :mod:`.channel_roles` paper 003, "New Perspective of Interpretability": the
  human-predictable multi-attribute network;
- :mod:`.relabel` paper 004, re-label distillation: a VAE, relabelled samples, a linear
  student.

Studies use the generic toolkit (:mod:`cnnlens.attribution`, :mod:`cnnlens.metrics`,
:mod:`cnnlens.analysis`); the generic toolkit never imports a study (the import contract
in ``pyproject.toml`` checks it). Nothing is imported here: ``import cnnlens.studies.drib``.
"""

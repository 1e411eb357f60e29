"""Grid of activation-maximisation images (:func:`cnnlens.analysis.maximise_all`).

One column per objective and one row per seed, wrapped after :data:`COLUMNS` objectives,
as Olah et al. (2017) lay out a unit's diverse optima side by side. Each cell is titled
with the objective and what the model makes of the image: the target class's softmax
probability for a class logit, the reached activation for a channel or neuron. Follows
the report's figure rule (:mod:`cnnlens.plotting`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..analysis.visualisation.maximise import Maximisation
from .figures import image_grid

COLUMNS = 8  # 8 cells of 128 px and their gaps fit the report's column


def cell_titles(result: Maximisation, name: str) -> list[str]:
    """Two-line titles for ``result``'s images: ``name``, then the seed and the outcome."""
    if result.objective.is_class:
        outcome = [f"p {p:.2f}" for p in result.probabilities[:, result.objective.index].tolist()]
    else:
        outcome = [f"{v:.3g}" for v in result.final.tolist()]
    return [f"{name}\ns{seed} {o}" for seed, o in zip(result.seeds, outcome)]


def maximise_grid(results: Sequence[Maximisation], names: Sequence[str]):
    """A figure of every result's ``pixels`` (results as columns, seeds as rows)."""
    if not results:
        raise ValueError("no results to draw")
    seeds = len(results[0].seeds)
    columns = min(COLUMNS, len(results))
    images, titles = [], []
    for block in range(0, len(results), columns):
        chunk = list(range(block, min(block + columns, len(results))))
        cells = [cell_titles(results[i], names[i]) for i in chunk]
        for s in range(seeds):
            for j in range(columns):
                if j < len(chunk):
                    images.append(results[chunk[j]].pixels[s].detach().cpu())
                    titles.append(cells[j][s])
                else:  # a short last block: blank cells keep the columns aligned
                    images.append(torch.ones_like(results[0].pixels[0].cpu()))
                    titles.append("")
    return image_grid(torch.stack(images), titles, columns=columns)

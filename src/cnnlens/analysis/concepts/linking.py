"""Naming discovered concepts and channels by TCAV (Kim et al. 2018) where the user gives
concept sets (issue 32, item 4).

A channel or a discovered concept of a layer is a direction ``d`` ``[C]`` in channel space;
a CAV of the same layer is a unit vector ``v`` over the flattened activations ``[C * H *
W]`` (:mod:`.cav`). ``d`` applied at every position is ``d (x) 1`` in that space, so their
cosine is ``<v, d (x) 1> / (|d| sqrt(H W)) = sum_c d_c s_c / (|d| sqrt(H W))`` with
``s_c = sum_p v_{c,p}``: how much the CAV points along the concept, on average over its
``R`` runs against random sets. Each direction is linked to the user's concept with the
largest mean cosine, and carries that concept's TCAV scores (Eq. 2) and significance per
class, so a discovered concept reads as "mostly <concept>, which matters to <class>".
"""

from __future__ import annotations

import torch

from ...errors import InputError


def cav_cosines(tcav, directions: torch.Tensor) -> torch.Tensor:
    """Mean cosine ``[m, n_concepts]`` of each of ``directions`` ``[m, C]`` with each
    concept's CAVs of a fitted :class:`~.tcav.TCAV` (see the module docstring)."""
    directions = torch.as_tensor(directions, dtype=torch.float64)
    if directions.dim() != 2:
        raise InputError(f"directions must be [m, C], got {tuple(directions.shape)}")
    channels = directions.shape[1]
    features = int(tcav.n_features_)
    if features % channels:
        raise InputError(
            f"the CAVs have {features} features, not a multiple of the {channels} channels; "
            "fit TCAV at the concepts' layer"
        )
    positions = features // channels
    unit = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out = torch.zeros(len(directions), len(tcav.concepts_), dtype=torch.float64)
    for j, name in enumerate(tcav.concepts_):
        sums = torch.stack(
            [cav.vector.view(channels, positions).sum(1) for cav in tcav.cavs_[name]]
        )
        out[:, j] = (unit @ sums.T).mean(1) / positions**0.5
    return out


def tcav_links(tcav, result, directions: torch.Tensor, names: list[str]) -> list[dict]:
    """For each of ``directions`` ``[m, C]`` (called ``names``): its cosine with each
    concept's CAVs and the best-aligned concept with its TCAV scores per class
    (``result``: ``tcav.score(...)``'s :class:`~.tcav.TCAVResult`)."""
    if len(names) != len(directions):
        raise InputError(f"{len(names)} names for {len(directions)} directions")
    cos = cav_cosines(tcav, directions)
    significant = result.significant
    links = []
    for i, name in enumerate(names):
        best = int(cos[i].argmax())
        links.append(
            {
                "name": name,
                "concept": tcav.concepts_[best],
                "cosine": float(cos[i, best]),
                "cosines": {c: float(cos[i, j]) for j, c in enumerate(tcav.concepts_)},
                "tcav": {
                    cls: {"score": float(result.mean[best, k]),
                          "significant": bool(significant[best, k])}
                    for k, cls in enumerate(result.class_names)
                },
            }
        )  # fmt: skip
    return links

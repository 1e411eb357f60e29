"""The information plane of the gated network itself (paper 000, section 4.3, Tables 3-4).

Paper 000 reads the transition and convergence points off the information plane of
its gated networks. :func:`gated_plane` builds the
:class:`~.information_plane.InformationPlane` callback for a gated model (the stage
outputs of a ResNet by default), :func:`~.training.train_gated` calls it after every
epoch of both phases (gating, then the fixed-decision fine-tune, one epoch count over
both), and :func:`plane_summary` gives its points with the phase of each epoch and the
key points (:func:`~.information_plane.key_points`) of every layer and estimator.
Epoch 0 is the gated model before training (masks of ones: the ungated model's features).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .information_plane import ESTIMATORS, InformationPlane, key_points

STAGES = ("layer1", "layer2", "layer3", "layer4")


def default_plane_layers(model: nn.Module) -> list[str] | None:
    """The stage outputs of a ResNet (``layer1``...); ``None`` (the last spatial layer,
    :func:`cnnlens.layers.auto_layer`) for other nets."""
    names = dict(model.named_children())
    found = [s for s in STAGES if s in names]
    return found or None


def gated_plane(
    model: nn.Module,
    data,
    *,
    layers: Sequence[str] | None = None,
    n: int = 500,
    bins: int = 30,
    noise_variance: float = 0.1,
    seed: int = 0,
) -> InformationPlane:
    """An :class:`InformationPlane` on ``n`` images of ``data`` for the gated ``model``,
    with its epoch-0 point measured (the model as it is before training)."""
    plane = InformationPlane(
        data,
        layers=list(layers) if layers else default_plane_layers(model),
        n=n,
        bins=bins,
        noise_variance=noise_variance,
        seed=seed,
    )
    plane.measure(model, 0)
    return plane


def key_point_rows(points: Sequence[dict], layers: Sequence[str]) -> list[dict]:
    """The transition and convergence points of every layer and estimator of ``points``
    (:meth:`InformationPlane.to_dict`'s); a convergence point at the last epoch is marked
    as not settled within the run."""
    from .information_plane import PlanePoint

    fields = set(PlanePoint.__dataclass_fields__)
    rows = []
    for layer in layers:
        for estimator in ESTIMATORS:
            trajectory = sorted(
                (
                    PlanePoint(**{k: v for k, v in p.items() if k in fields})
                    for p in points
                    if p["layer"] == layer and p["estimator"] == estimator
                ),
                key=lambda p: p.epoch,
            )
            if not trajectory:
                continue
            for kind, p in key_points(trajectory).items():
                if kind == "convergence" and p.epoch == trajectory[-1].epoch:
                    kind += " (last epoch: not settled within the run)"
                rows.append({**p.to_dict(), "point": kind})
    return rows


def plane_summary(plane: InformationPlane, phases: dict[int, str] | None = None) -> dict:
    """``plane.to_dict()`` with each point's ``phase`` (``phases``: epoch -> phase; epoch 0
    is ``"start"``) and ``key_points`` (:func:`key_point_rows`)."""
    result = plane.to_dict()
    phases = {0: "start", **(phases or {})}
    for p in result["points"]:
        p["phase"] = phases.get(p["epoch"], "")
    result["key_points"] = key_point_rows(result["points"], result["layers"])
    for row in result["key_points"]:
        row["phase"] = phases.get(row["epoch"], "")
    return result

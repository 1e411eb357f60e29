"""Result types shared by attribution methods and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Explanation:
    """Attribution maps for a batch of images.

    ``maps`` is ``[N,1,H,W]`` float32 on the model's device; ``raw`` the
    per-channel attribution ``[N,C,H,W]`` for pixel-space methods (``None``
    for CAMs); ``target`` the explained class per image ``[N]``.
    """

    maps: torch.Tensor
    target: torch.Tensor
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    raw: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.maps.dim() != 4 or self.maps.shape[1] != 1:
            raise ValueError(f"Explanation.maps must be [N,1,H,W], got {tuple(self.maps.shape)}")

    def __len__(self) -> int:
        return self.maps.shape[0]

    def normalized(self, *, signed: bool = False) -> torch.Tensor:
        """Maps scaled per image to [0, 1] (or [-1, 1] by max |value| if ``signed``)."""
        flat = self.maps.flatten(1)
        if signed:
            scale = flat.abs().amax(1).clamp_min(1e-12)
            return (flat / scale[:, None]).view_as(self.maps)
        lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
        return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(self.maps)

    def numpy(self):
        """Maps as a ``[N,H,W]`` NumPy array on the CPU."""
        return self.maps[:, 0].detach().float().cpu().numpy()

    def overlay(self, images: torch.Tensor, *, alpha: float = 0.5, cmap: str = "jet"):
        """Heat maps blended over ``images`` (``[N,C,H,W]`` in [0,1]) as ``[N,H,W,3]`` floats."""
        import matplotlib

        colormap = matplotlib.colormaps[cmap]
        heat = colormap(self.normalized()[:, 0].detach().cpu().numpy())[..., :3]
        base = images.detach().cpu().clamp(0, 1)
        if base.shape[1] == 1:
            base = base.expand(-1, 3, -1, -1)
        base = base.permute(0, 2, 3, 1).numpy()
        return (1 - alpha) * base + alpha * heat

    def _repr_png_(self) -> bytes:
        """Jupyter shows an explanation as a row of its maps."""
        from .plotting import explanation_grid_png

        return explanation_grid_png(self)


@dataclass
class Curve:
    """A score curve per image: ``x [S]``, ``y [N,S]`` and its area ``auc [N]``."""

    x: torch.Tensor
    y: torch.Tensor
    auc: torch.Tensor

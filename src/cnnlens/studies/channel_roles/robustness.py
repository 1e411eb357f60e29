"""Robustness of the attribute network under input noise, for a grid of mask transformations
(paper 003, "Mask Transformation Experiment", Fig. 8).

Gaussian noise of standard deviation ``std`` (a share of the [0, 1] input range: 0 to 0.5 in
the paper) is added to every image before normalisation (in model units: ``std / data.std``
per channel), not clipped. One noise draw per image (``seed``) is scaled to each level, so the
curves are paired. For each level the extractor and the masks run once; each (n, beta) of the
grid then only re-weights the masks by g(M; n, beta) (:mod:`.transform`) before pooling and the
heads (Eq. 13). (1, 0) is the untransformed network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...chunking import run_chunked
from ...errors import InputError
from ...hooks import frozen
from ...placement import model_device
from .data import attribute_dataset
from .objective import require_attribute_network
from .passes import CHUNK, accuracy_per_attribute, subset_indices
from .transform import check_parameters, mask_transform

NOISE_STDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
TRANSFORMS = ((1.0, 0.0), (2.0, 0.0), (4.0, 0.0), (2.0, 0.2), (4.0, 0.2), (4.0, 0.5))


@dataclass
class RobustnessGrid:
    """``accuracy [T,S,K]``: per transformation (n, beta), noise std and attribute."""

    transforms: list[tuple[float, float]]
    stds: list[float]
    accuracy: torch.Tensor
    attribute_names: list[str]

    @property
    def mean_accuracy(self) -> torch.Tensor:
        """``[T,S]``: mean over attributes."""
        return self.accuracy.mean(-1)

    def to_dict(self) -> dict:
        return {
            "transforms": [list(t) for t in self.transforms],
            "stds": list(self.stds),
            "mean_accuracy": self.mean_accuracy.tolist(),
            "accuracy": self.accuracy.tolist(),
            "attribute_names": list(self.attribute_names),
        }

    def table(self) -> str:
        """Markdown: one row per (n, beta), one column per noise std (mean accuracy, %)."""
        head = "| n | beta | " + " | ".join(f"std {s:g}" for s in self.stds) + " |"
        rows = [head, "|---:|---:|" + "---:|" * len(self.stds)]
        for (n, beta), accs in zip(self.transforms, self.mean_accuracy.tolist(), strict=True):
            cells = " | ".join(f"{100 * a:.1f}" for a in accs)
            rows.append(f"| {n:g} | {beta:g} | {cells} |")
        return "\n".join(rows)


@torch.no_grad()
def robustness_grid(
    model,
    data,
    *,
    stds=NOISE_STDS,
    transforms=TRANSFORMS,
    n: int | None = 500,
    seed: int = 0,
) -> RobustnessGrid:
    """Per-attribute accuracy under input noise for each mask transformation (Fig. 8)."""
    require_attribute_network(model)
    data = attribute_dataset(data)
    transforms = [(float(a), float(b)) for a, b in transforms]
    for a, b in transforms:
        check_parameters(a, b)
    stds = [float(s) for s in stds]
    if not stds or any(not s >= 0 for s in stds):
        raise InputError(f"noise stds must be >= 0, got {stds}")
    idx = subset_indices(data, n)
    device = model_device(model)
    targets = data.attributes[idx].bool()
    x_all, _ = data.tensors(idx)
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(x_all.shape, generator=gen) / torch.tensor(data.std).view(1, -1, 1, 1)

    def level(std: float):
        def part(a: int, b: int):
            x = (x_all[a:b] + std * noise[a:b]).to(device)
            f = model.features(x)
            masks = model.attention(f)
            out = []
            for tn, tb in transforms:
                used = masks if (tn, tb) == (1.0, 0.0) else mask_transform(masks, tn, tb)
                out.append(model.heads((used * f.unsqueeze(1)).mean(dim=(-2, -1))).cpu())
            return torch.stack(out, 1)  # [n,T,K]

        return run_chunked(part, len(idx), CHUNK)

    with frozen(model):
        per_level = [level(s) for s in stds]
    acc = torch.stack(
        [
            torch.stack([accuracy_per_attribute(lg[:, t], targets) for t in range(len(transforms))])
            for lg in per_level
        ],
        1,
    )  # [T,S,K]
    return RobustnessGrid(transforms, stds, acc, list(model.attribute_names))

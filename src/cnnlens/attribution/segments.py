"""Segments and coalitions for the surrogate methods (LIME, Kernel SHAP).

An image is split into ``M`` segments (SLIC superpixels from scikit-image, a
regular grid, or labels the user gives); a coalition ``z in {0,1}^M`` keeps
the segments with ``z = 1`` and fills the others with the baseline. Images of
one call may have different ``M``; labels are padded to ``M_max`` and
``valid [N, M_max]`` says which features exist.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError

DEFAULT_SLIC_SEGMENTS = 50
DEFAULT_GRID = 8


def _slic(inputs: torch.Tensor, n_segments: int) -> torch.Tensor:
    """SLIC labels ``[N,H,W]`` (scikit-image) on each image scaled to [0, 1].

    Segmentation is preprocessing of the explained images, not part of the
    sampled computation, so it runs once on the CPU.
    """
    from skimage.segmentation import slic

    x = inputs.detach().float().cpu()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = ((x - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()
    channel_axis = -1 if x.shape[-1] > 1 else None
    labels = [
        torch.from_numpy(
            slic(
                img if channel_axis is not None else img[..., 0],
                n_segments=n_segments,
                compactness=10.0,
                start_label=0,
                channel_axis=channel_axis,
            )
        )
        for img in x
    ]
    return torch.stack(labels).long()


def _grid(n: int, h: int, w: int, cells: int, device: torch.device) -> torch.Tensor:
    rows = torch.arange(h, device=device) * cells // h
    cols = torch.arange(w, device=device) * cells // w
    return (rows[:, None] * cells + cols[None, :]).expand(n, h, w).clone()


def _parse_count(spec: str, kind: str, default: int) -> int:
    if spec == kind:
        return default
    try:
        value = int(spec.split(":", 1)[1])
    except (IndexError, ValueError):
        value = 0
    if value < 1:
        raise InputError(f"segments {spec!r}: expected '{kind}' or '{kind}:<positive int>'")
    return value


def check_segments(segments: object) -> None:
    """A ``segments`` word must be ``slic``, ``slic:<n>``, ``grid`` or ``grid:<k>``
    (a tensor is checked against the inputs when they come)."""
    if isinstance(segments, str):
        kind = segments.split(":", 1)[0]
        if kind not in ("slic", "grid"):
            raise InputError(
                f"segments must be 'slic', 'slic:<n>', 'grid', 'grid:<k>' or a label tensor, "
                f"got {segments!r}"
            )
        _parse_count(segments, kind, 1)


def segment(inputs: torch.Tensor, segments: object = "slic") -> tuple[torch.Tensor, torch.Tensor]:
    """Labels ``[N,H,W]`` (contiguous from 0 per image) and ``valid [N, M_max]``.

    ``segments``: ``"slic"`` (50 SLIC superpixels; an image SLIC leaves in one
    piece gets the 8 x 8 grid), ``"slic:<n>"``, ``"grid"``
    (8 x 8 cells), ``"grid:<k>"`` (k x k cells), or an integer tensor of labels
    ``[H,W]`` or ``[N,H,W]``.
    """
    n, _c, h, w = inputs.shape
    device = inputs.device
    if isinstance(segments, torch.Tensor):
        if segments.is_floating_point() or segments.dim() not in (2, 3):
            raise InputError(
                f"segments as a tensor must be integer labels [H,W] or [N,H,W], got "
                f"{segments.dtype} {tuple(segments.shape)}"
            )
        labels = segments.to(device).long()
        labels = labels.expand(n, h, w) if labels.dim() == 2 else labels
        if tuple(labels.shape) != (n, h, w):
            raise InputError(f"segments shape {tuple(segments.shape)} does not match {(n, h, w)}")
    elif isinstance(segments, str) and segments.startswith("slic"):
        labels = _slic(inputs, _parse_count(segments, "slic", DEFAULT_SLIC_SEGMENTS)).to(device)
        # SLIC merges everything on texture-free or pure-noise images: use the grid there
        single = labels.flatten(1).amax(1) == labels.flatten(1).amin(1)
        if single.any():
            labels[single] = _grid(int(single.sum()), h, w, min(DEFAULT_GRID, h, w), device)
    elif isinstance(segments, str) and segments.startswith("grid"):
        cells = _parse_count(segments, "grid", DEFAULT_GRID)
        if cells > min(h, w):
            raise InputError(f"segments {segments!r}: more cells than pixels ({h}x{w})")
        labels = _grid(n, h, w, cells, device)
    else:
        raise InputError(
            f"segments must be 'slic', 'slic:<n>', 'grid', 'grid:<k>' or a label tensor, "
            f"got {segments!r}"
        )
    # relabel each image to 0..M_i-1
    flat = labels.reshape(n, -1)
    out, counts = [], []
    for row in flat:  # one unique per image: preprocessing, not a model pass
        _, inverse = torch.unique(row, return_inverse=True)
        out.append(inverse)
        counts.append(int(inverse.max()) + 1)
    labels = torch.stack(out).view(n, h, w)
    m_max = max(counts)
    if m_max < 2:
        raise InputError("each image needs at least 2 segments to explain")
    valid = torch.arange(m_max, device=device)[None] < torch.tensor(counts, device=device)[:, None]
    return labels, valid


def apply_coalitions(
    inputs: torch.Tensor,
    base: torch.Tensor,
    labels: torch.Tensor,
    img: torch.Tensor,
    coalitions: torch.Tensor,
) -> torch.Tensor:
    """Images ``inputs[img]`` keeping the segments where ``coalitions`` ``[k, M]`` is 1."""
    k = img.shape[0]
    keep = coalitions.gather(1, labels[img].view(k, -1)).view(k, 1, *labels.shape[1:])
    return torch.where(keep.bool(), inputs[img], base[img])


def shapley_size_probabilities(valid: torch.Tensor) -> torch.Tensor:
    """``P(|z| = k)`` proportional to ``(M-1) / (k (M-k))`` for ``k = 1..M-1``, ``[N, M_max+1]``.

    Drawing the size from this and then a uniform subset of that size samples
    coalitions with the Shapley kernel weight (Lundberg & Lee 2017, Thm. 2).
    """
    m = valid.sum(1, keepdim=True).float()
    k = torch.arange(valid.shape[1] + 1, device=valid.device, dtype=torch.float32)[None]
    inside = (k >= 1) & (k <= m - 1)
    weights = torch.where(inside, (m - 1) / (k * (m - k)).clamp_min(1e-12), torch.zeros_like(k))
    return weights / weights.sum(1, keepdim=True)


def sample_coalitions(
    valid: torch.Tensor, n_samples: int, g: torch.Tensor | torch.Generator, *, shapley: bool
) -> torch.Tensor:
    """Coalitions ``[N, S, M_max]`` (float 0/1; 0 on padded features).

    ``shapley=False``: each feature kept with probability 1/2 (LIME, Captum's
    default). ``shapley=True``: size from :func:`shapley_size_probabilities`,
    then a uniform subset of that size (Captum's KernelShap sampler).
    """
    n, m_max = valid.shape
    device = valid.device
    u = torch.rand(n, n_samples, m_max, generator=g, device=device)
    if not shapley:
        return ((u < 0.5) & valid[:, None]).float()
    sizes = torch.multinomial(
        shapley_size_probabilities(valid), n_samples, replacement=True, generator=g
    )
    u = u.masked_fill(~valid[:, None], math.inf)
    rank = u.argsort(dim=2).argsort(dim=2)
    return (rank < sizes[:, :, None]).float()


def all_coalitions(m: int, device: torch.device) -> torch.Tensor:
    """Every coalition of ``m`` features except the empty and the full one, ``[2^m - 2, m]``."""
    codes = torch.arange(1, 2**m - 1, device=device)
    return ((codes[:, None] >> torch.arange(m, device=device)[None]) & 1).float()

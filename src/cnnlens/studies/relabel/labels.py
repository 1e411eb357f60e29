"""Re-labelling by the network (paper 004, Eq. 6) and the search for a perturbation scale.

``y'_i = 1`` if the network's top-1 on ``x'_i`` is the explained class ``c``
(by default its top-1 on ``x``), else 0; the soft label is ``p_T(c | x'_i)``.
The student needs both labels present, so :func:`search_scale` adapts the
latent ``scale`` per image until the share of ``y' = 1`` lies in the band
(``[0.1, 0.9]`` by default):

1. start at ``scale`` (1: samples from the VAE's own posterior);
2. share above the band (the samples are all still ``c``): multiply the scale
   by 4; share below it: divide it by 4;
3. once one scale gave a share above the band and another one below it, the
   next scale is their geometric mean (bisection in log scale);
4. stop when the share lies in the band, or after ``max_tries`` scales (8); the
   last scale tried is kept either way.

The search looks at the first ``probe`` (100) of the ``n`` samples of each
image, with the same noise ``eps`` at every scale, and only the images still
outside the band are decoded and relabelled again; then all ``n`` samples are
decoded and relabelled once at the chosen scale, and their share is reported
(it may differ from the probe's by sampling error). Cost: at most
``max_tries * probe + n`` decodes and network passes per image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...accel import forward_runner
from ...chunking import chunk_size, run_chunked

SEARCH_FACTOR = 4.0


@torch.no_grad()
def teacher_labels(
    model: torch.nn.Module,
    synthetic: torch.Tensor,
    target: torch.Tensor,
    n: int,
    *,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard labels ``y'`` (Eq. 6) and soft labels ``p_T(c | x')``, each ``[K, n]``.

    ``synthetic`` is ``[K * n, C, H, W]`` image-major; ``target`` ``[K]`` the class
    ``c`` of each image. One chunked pass of the (fast copy of the) model.
    """
    run = forward_runner(model, synthetic[:1])
    size = chunk_size(model, synthetic[:1], backward=False, batch_size=batch_size, memory=memory)
    classes = target.repeat_interleave(n)

    def label(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits = run(synthetic[start:stop])
        c = classes[start:stop, None]
        hard = (logits.argmax(1, keepdim=True) == c).float()
        soft = logits.softmax(1).gather(1, c)
        return hard[:, 0], soft[:, 0]

    hard, soft = run_chunked(label, len(synthetic), size)
    return hard.view(-1, n), soft.view(-1, n)


@dataclass
class Relabelled:
    """Synthetic images ``[K, n, C, H, W]``, their labels ``[K, n]``, and per image the
    final ``scale``, the share of ``y' = 1`` and the number of scales tried (``[K]``)."""

    synthetic: torch.Tensor
    hard: torch.Tensor
    soft: torch.Tensor
    scale: torch.Tensor
    share: torch.Tensor
    tries: torch.Tensor


def search_scale(
    generate: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    label: Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
    count: int,
    n: int,
    *,
    scale: float = 1.0,
    band: tuple[float, float] = (0.1, 0.9),
    max_tries: int = 8,
    probe: int = 100,
    device: torch.device | None = None,
) -> Relabelled:
    """Run the documented scale search for ``count`` images with ``n`` samples each.

    ``generate(images, scales, m)`` returns the first ``m`` synthetic images of each
    chosen image at those scales, ``[len(images) * m, C, H, W]``; ``label(synthetic,
    images, m)`` their hard and soft labels ``[len(images), m]``. The search looks at
    the first ``probe`` samples of each image (all rounds batched over the images
    still outside the band); the chosen scale then generates and labels all ``n``,
    and the share reported is that of the ``n``.
    """
    low, high = band
    m = min(probe, n)
    current = torch.full((count,), float(scale), device=device)
    above = torch.full((count,), float("nan"), device=device)  # largest scale with share > high
    below = torch.full((count,), float("nan"), device=device)  # smallest scale with share < low
    used = current.clone()  # the last scale tried
    tries = torch.zeros(count, dtype=torch.long, device=device)
    active = torch.arange(count, device=device)
    for _round in range(max_tries):
        h, _s = label(generate(active, current[active], m), active, m)
        tries[active] += 1
        used[active] = current[active]
        got = h.mean(1)
        too_high, too_low = got > high, got < low
        above[active[too_high]] = current[active[too_high]]
        below[active[too_low]] = current[active[too_low]]
        outside = too_high | too_low
        active = active[outside]
        if len(active) == 0:
            break
        a, b, c = above[active], below[active], current[active]
        bracketed = ~torch.isnan(a) & ~torch.isnan(b)
        step = torch.where(too_high[outside], c * SEARCH_FACTOR, c / SEARCH_FACTOR)
        current[active] = torch.where(bracketed, (a * b).sqrt(), step)
    everyone = torch.arange(count, device=device)
    synthetic = generate(everyone, used, n)
    hard, soft = label(synthetic, everyone, n)
    synthetic = synthetic.view(count, n, *synthetic.shape[1:])
    return Relabelled(synthetic, hard, soft, used, hard.mean(1), tries)

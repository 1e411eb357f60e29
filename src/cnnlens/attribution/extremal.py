"""Optimised masks: extremal perturbation (Fong, Patrick & Vedaldi 2019, as in
TorchRay) and meaningful perturbation (Fong & Vedaldi 2017).

Both learn a mask per image by gradient descent through the model, blending the
image with blurred copies of itself. Images are optimised together (one loss
summed over images; the optimisers act per element, so each image's mask
follows exactly the path it would follow alone), in chunks of images from
:mod:`cnnlens.chunking`. Spatial defaults are TorchRay's / the paper's for
224 px, scaled to the input size (step 7, sigma 21, max blur 20 at 224 px).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..accel import fast_runner
from ..chunking import run_chunked
from ..errors import InputError
from ..params import Param
from ..types import Explanation
from . import register
from ._perturb import generator, positive_float, positive_int
from .base import BATCH_SIZE, MEMORY, SEED, Method

REFERENCE_SIZE = 224


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, zero padding, radius ``ceil(4 sigma)`` (TorchRay imsmooth)."""
    if sigma <= 0:
        return x
    radius = math.ceil(4 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)
    return F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)


def blur_pyramid(x: torch.Tensor, levels: int, max_blur: float) -> torch.Tensor:
    """``[N,L,C,H,W]``: level ``l`` blurred with ``max_blur (1 - l/(L-1))``; the last is ``x``."""
    steps = torch.linspace(0, 1, levels).tolist()
    return torch.stack([gaussian_blur(x, (1 - s) * max_blur) for s in steps], 1)


class Pyramid:
    """Blurred copies of images, levels ``[N,L,C,H,W]`` (:func:`blur_pyramid`), with
    the differences of neighbouring levels kept for :meth:`apply`."""

    def __init__(self, x: torch.Tensor, levels: int, max_blur: float) -> None:
        self.levels = blur_pyramid(x, levels, max_blur)
        step = self.levels[:, 1:] - self.levels[:, :-1]
        # the top level has no next one: it keeps the image and passes no gradient
        self.steps = torch.cat([step, torch.zeros_like(step[:, :1])], 1)

    def apply(self, mask: torch.Tensor) -> torch.Tensor:
        """Per pixel, interpolate level ``mask (L-1)`` (1 = the image, 0 = most
        blurred): ``level[k] + frac * (level[k+1] - level[k])``, ``k = floor``."""
        w = mask * (self.levels.shape[1] - 1)  # [N,1,H,W]
        k = w.detach().floor().long()[:, None].expand(-1, 1, self.levels.shape[2], -1, -1)
        lower = self.levels.gather(1, k)[:, 0]
        return torch.addcmul(lower, torch.frac(w), self.steps.gather(1, k)[:, 0])


def _tap_groups(weight: torch.Tensor) -> list[list[int]]:
    """Indices of the rows of ``weight`` grouped where the rows are equal."""
    groups: list[list[int]] = []
    for i in range(len(weight)):
        same = [g for g in groups if torch.equal(weight[g[0]], weight[i])]
        if same:
            same[0].append(i)
        else:
            groups.append([i])
    return groups


def _sum_into(out: torch.Tensor, parts: list[torch.Tensor]) -> torch.Tensor:
    if len(parts) == 1:
        return out.copy_(parts[0])
    torch.add(parts[0], parts[1], out=out)
    for part in parts[2:]:
        out.add_(part)
    return out


def _gather_taps(z: torch.Tensor, rows: list[list[int]], cols: list[list[int]], size, mid):
    """``out[p] = sum_{ky, kx} z[row(ky), col(kx), p + (ky, kx)]``: ``z`` ``[B,R,C,H,W]``
    holds one channel per (row group, column group) of taps, summed separably
    (through ``mid`` ``[B,R,H,wo]``)."""
    (ho, wo), b = size, z.shape[0]
    cols_parts = [z[:, :, col, :, k : k + wo] for col, taps in enumerate(cols) for k in taps]
    mid = _sum_into(mid, cols_parts)
    rows_parts = [mid[:, row, k : k + ho] for row, taps in enumerate(rows) for k in taps]
    return _sum_into(z.new_empty(b, ho, wo), rows_parts)


def _spread_taps(g: torch.Tensor, rows: list[list[int]], cols: list[list[int]], mid, out):
    """Adjoint of :func:`_gather_taps` on the interior: ``g`` ``[B,H,W]`` padded by
    ``side - 1 - padding``; ``out[row, col, q] = sum_{ky, kx} g[q + side - 1 - (ky, kx)]``
    ``[B,R,C,hi,wi]`` (through ``mid`` ``[B,R,hi,W]``)."""
    (hi, wi), side = out.shape[-2:], sum(map(len, rows))
    for row, taps in enumerate(rows):
        _sum_into(mid[:, row], [g[:, side - 1 - k : side - 1 - k + hi] for k in taps])
    for col, taps in enumerate(cols):
        parts = [mid[..., side - 1 - k : side - 1 - k + wi] for k in taps]
        _sum_into(out[:, :, col], parts)
    return out


class _SmoothMax(torch.autograd.Function):
    """TorchRay's smooth max of the weighted neighbours, for a weight that does not
    depend on the position (step 1): ``y = sum_k a_k e_k / sum_k e_k`` with
    ``a_k = w_k params[p + k]``, ``e_k = exp(coldness a_k)`` (softmax without the
    max shift: ``a`` is in [0, 1], so ``e`` cannot overflow) and the gradient
    ``dy/da_k = e_k (1 + coldness (a_k - y)) / sum_k e_k``.

    Taps with equal weight rows / columns share one channel of ``e`` computed on the
    parameter grid, so the neighbour sums are shifted slices (no unfold, no softmax).
    """

    @staticmethod
    def forward(ctx, params: torch.Tensor, gen: SmoothMaskGenerator) -> torch.Tensor:
        n, pad, (h, w), (r, c) = len(params), gen.padding, gen.shape_in, gen.class_weight.shape[:2]
        # e = exp(coldness a) and a e, on the padded grid: 1 and 0 where the padding is
        shape = (2, n, r, c, h + 2 * pad, w + 2 * pad)
        z = gen.workspace("z", params, shape, first=lambda buf: buf[0].fill_(1))
        e, ae = z[0, ..., pad : pad + h, pad : pad + w], z[1, ..., pad : pad + h, pad : pad + w]
        m = params[:, :, None]  # [N,1,1,H,W]
        torch.mul(m, gen.class_exponent, out=e).exp2_()
        torch.mul(m, gen.class_weight, out=ae).mul_(e)
        mid = gen.workspace("mid", params, (2 * n, r, h + 2 * pad, gen.shape_mid[1]))
        st = _gather_taps(z.flatten(0, 1), gen.rows, gen.cols, gen.shape_mid, mid)
        s, y = st[:n], st[n:] / st[:n]
        ctx.gen = gen
        ctx.save_for_backward(params, e, s, y)
        return y[:, None]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        params, e, s, y = ctx.saved_tensors
        gen, n, (ho, wo) = ctx.gen, len(params), y.shape[1:]
        lo = 2 * gen.radius - gen.padding
        # dL/dt = u and dL/ds = -u y, zero-padded by lo
        g = gen.workspace("g", params, (2 * n, ho + 2 * lo, wo + 2 * lo))
        u = torch.div(grad[:, 0], s, out=g[:n, lo : lo + ho, lo : lo + wo])
        torch.mul(u, y, out=g[n:, lo : lo + ho, lo : lo + wo])
        (h, w), (r, c) = gen.shape_in, gen.class_weight.shape[:2]
        mid = gen.workspace("spread", params, (2 * n, r, h, wo + 2 * lo))
        uv = gen.workspace("uv", params, (2 * n, r, c, h, w))
        _spread_taps(g, gen.rows, gen.cols, mid, uv)
        u, v = uv[:n], uv[n:]
        a = params[:, :, None] * gen.class_weight
        da = torch.addcmul(u, u, a, value=gen.coldness).sub_(v, alpha=gen.coldness)
        return (da.mul_(e * gen.class_weight).sum((1, 2)))[:, None], None


class SmoothMaskGenerator:
    """TorchRay's smooth-max mask: parameters on a grid of ``step`` px, each
    spreading a bump of radius ``sigma``, pooled by a soft maximum (coldness 20).

    :meth:`generate` returns the mask cropped to the image and the full mask
    with its margin (on which the area constraint acts).
    """

    def __init__(
        self, shape: tuple[int, int], step: int, sigma: float, device: torch.device
    ) -> None:
        self.shape, self.step, self.sigma = shape, step, sigma
        self.coldness = 20.0
        self.margin = sigma
        self.padding = 1 + math.ceil((self.margin + sigma) / step)
        self.radius = 1 + math.ceil(sigma / step)
        self.shape_in = [math.ceil(z / step) for z in shape]
        self.shape_mid = [z + 2 * self.padding - (2 * self.radius + 1) + 1 for z in self.shape_in]
        self.shape_up = [step * z for z in self.shape_mid]
        self.shape_out = [z - step + 1 for z in self.shape_up]
        side = 2 * self.radius + 1
        uy, ux = torch.meshgrid(
            torch.arange(self.shape_out[0], dtype=torch.float32),
            torch.arange(self.shape_out[1], dtype=torch.float32),
            indexing="ij",
        )
        ky = torch.arange(side, dtype=torch.float32).repeat_interleave(side)[:, None, None]
        kx = torch.arange(side, dtype=torch.float32).repeat(side)[:, None, None]
        inv = [
            torch.tensor(m, dtype=torch.float32) / torch.tensor(u, dtype=torch.float32)
            for m, u in zip(self.shape_mid, self.shape_up)
        ]
        iy = torch.floor(inv[0] * uy)[None] + ky - self.padding
        ix = torch.floor(inv[1] * ux)[None] + kx - self.padding
        delta = torch.sqrt(
            (uy[None] - (self.margin + step * iy)) ** 2
            + (ux[None] - (self.margin + step * ix)) ** 2
        )
        self.weight = torch.exp(-2 * ((delta / sigma - 0.5).clamp(min=0) ** 2))[None]
        taps = self.weight[0, :, :1, :1].reshape(side, side)
        # at step 1 the weight is the same at every position (up to the rounding of
        # its computation): the fast path of _SmoothMax
        shared = taps.reshape(1, -1, 1, 1).expand_as(self.weight)
        self.shared = step == 1 and torch.allclose(self.weight, shared, rtol=0, atol=1e-6)
        if self.shared:
            self.rows, self.cols = _tap_groups(taps), _tap_groups(taps.T)
            w = taps[[g[0] for g in self.rows]][:, [g[0] for g in self.cols]]
            self.class_weight = w[:, :, None, None].to(device)
            exponent = w.double() * self.coldness / math.log(2)
            self.class_exponent = exponent.float()[:, :, None, None].to(device)
        self.weight = self.weight.to(device)
        self._workspaces: dict[tuple, torch.Tensor] = {}

    def workspace(self, name: str, like: torch.Tensor, shape, first=None) -> torch.Tensor:
        """A buffer ``name`` of ``shape``, made once (zeros, then ``first(buffer)``)
        and reused by every iteration: fresh large buffers cost page faults on each
        use. What an iteration does not overwrite keeps its first value; autograd's
        version check refuses a backward through a generation whose buffer a later
        one has reused."""
        key = (name, tuple(shape), like.dtype, like.device)
        buf = self._workspaces.get(key)
        if buf is None:
            buf = self._workspaces[key] = like.new_zeros(tuple(shape))
            if first is not None:
                first(buf)
        return buf

    def generate(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shared:
            mask = _SmoothMax.apply(params, self)
        else:
            mask = self._generate_unfolded(params)
        mask = mask.clamp(0, 1)
        m = round(self.margin)
        return mask[:, :, m : m + self.shape[0], m : m + self.shape[1]], mask

    def _generate_unfolded(self, params: torch.Tensor) -> torch.Tensor:
        side = 2 * self.radius + 1
        mask = F.unfold(params, (side, side), padding=(self.padding,) * 2)
        mask = mask.reshape(len(params), -1, *self.shape_mid)
        if self.step > 1:  # at step 1 both are identities (and the copy is costly)
            mask = F.interpolate(mask, size=self.shape_up, mode="nearest")
            mask = F.pad(mask, (0, -self.step + 1, 0, -self.step + 1))
        mask = self.weight * mask
        return (mask * F.softmax(self.coldness * mask, dim=1)).sum(dim=1, keepdim=True)


def area_gap(mask: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``mean((sort(mask) - reference)^2)`` per row (Fong et al. 2019, eq. 5; TorchRay),
    ``reference`` sorted zeros then ones. Only which values meet the ones matters: one
    selection finds them; a tie across that boundary falls back to the sort, whose
    (unspecified) order of equal values decides, as in TorchRay."""
    keep = int(reference.sum())
    if 0 < keep < mask.shape[1]:
        values = mask.detach()
        smallest_kept = values.kthvalue(mask.shape[1] - keep + 1, dim=1, keepdim=True)[0]
        kept = values >= smallest_kept
        if bool((kept.sum(1) == keep).all()):
            return ((mask - kept.to(mask.dtype)) ** 2).mean(1)
    return ((mask.sort(dim=1)[0] - reference) ** 2).mean(1)


class MomentumSGD:
    """``torch.optim.SGD`` with momentum and dampening for one tensor, step for step
    the same arithmetic, without the optimiser's per-step bookkeeping (the buffer
    starts as the first gradient, then ``b = momentum b + (1 - dampening) g``;
    ``p -= lr b``)."""

    def __init__(self, lr: float, momentum: float, dampening: float) -> None:
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.buffer: torch.Tensor | None = None

    def step(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        if self.buffer is None:
            self.buffer = grad.clone()
        else:
            self.buffer.mul_(self.momentum).add_(grad, alpha=1 - self.dampening)
        param.data.add_(self.buffer, alpha=-self.lr)


def _scaled(value: object, name: str, default_224: float, size: int) -> float:
    if value is None:
        return default_224 * size / REFERENCE_SIZE
    return positive_float(name, value)


@register
class ExtremalPerturbation(Method):
    """Extremal perturbation (TorchRay defaults): ``area`` (0.1), ``iterations`` (800),
    ``variant`` ("preserve", "delete" or "dual"), ``levels`` (8), ``step``, ``sigma``,
    ``max_blur`` (default 7, 21, 20 px at 224 px, scaled to the input), ``jitter``
    (True), ``batch_size`` (images per optimisation chunk).

    SGD (lr 0.01, momentum 0.9, dampening 0.9) on the mask parameters maximises
    the target logit of the blurred-outside-the-mask image minus
    ``lambda ||sort(mask) - r_area||^2`` with ``lambda = 300 * 1.0035^t``.
    ``area`` is the fraction of the image (TorchRay counts it on the mask with
    its margin, about 1.35x larger at its defaults). Maps: the mask in [0, 1]
    (no randomness; deterministic).
    """

    hyperparameters = {
        "area": Param("float", 0.1, min=0, max=1, open_min=True, open_max=True),
        "iterations": Param("int", 800, min=1),
        "variant": Param("str", "preserve", choices=("preserve", "delete", "dual")),
        "levels": Param("int", 8, min=2),
        "step": Param("int", None, min=1, none=True, help="none: 7 px at 224 px, scaled"),
        "sigma": Param("float", None, min=0, open_min=True, none=True),
        "max_blur": Param("float", None, min=0, open_min=True, none=True),
        "jitter": Param("bool", True),
        "seed": SEED,
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }
    name = "extremal-perturbation"
    description = "extremal perturbation: smooth mask of fixed area that keeps the class score"
    family = "Perturbation"

    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor, logits: torch.Tensor
    ) -> Explanation:
        p = self.params
        area = positive_float("area", p.get("area", 0.1))
        if area >= 1:
            raise InputError(f"area is a fraction of the image in (0, 1), got {area}")
        iterations = positive_int("iterations", p.get("iterations", 800))
        variant = p.get("variant", "preserve")
        if variant not in ("preserve", "delete", "dual"):
            raise InputError(f"variant must be 'preserve', 'delete' or 'dual', got {variant!r}")
        levels = positive_int("levels", p.get("levels", 8))
        if levels < 2:
            raise InputError(f"levels must be >= 2, got {levels}")
        n, _c, h, w = inputs.shape
        size = min(h, w)
        step = p.get("step")
        step = max(1, round(7 * size / REFERENCE_SIZE)) if step is None else step
        step = positive_int("step", step)
        sigma = _scaled(p.get("sigma"), "sigma", 21.0, size)
        max_blur = _scaled(p.get("max_blur"), "max_blur", 20.0, size)
        jitter = bool(p.get("jitter", True))
        masks_gen = SmoothMaskGenerator((h, w), step, sigma, inputs.device)
        max_area = masks_gen.shape_out[0] * masks_gen.shape_out[1]
        reference = torch.ones(1, max_area, device=inputs.device)
        # TorchRay counts the area on the mask with its margin; count it on the image
        # instead, so ``area`` is the fraction of the image the mask keeps (Fong 2019).
        reference[:, : max(0, max_area - round(area * h * w))] = 0
        copies = 2 if variant == "dual" else 1

        def optimise(start: int, stop: int) -> torch.Tensor:
            x, t = inputs[start:stop], target[start:stop].repeat(copies)[:, None]
            model = fast_runner(self.model, x, "folded")
            pyramid = Pyramid(x, levels, max_blur)
            params = torch.ones(stop - start, 1, *masks_gen.shape_in, device=x.device)
            params.requires_grad_(True)
            sgd = MomentumSGD(lr=0.01, momentum=0.9, dampening=0.9)
            weight = 300.0
            for it in range(iterations):
                cropped, full = masks_gen.generate(params)
                if variant == "preserve":
                    xm = pyramid.apply(cropped)
                elif variant == "delete":
                    xm = pyramid.apply(1 - cropped)
                else:
                    xm = torch.cat([pyramid.apply(cropped), pyramid.apply(1 - cropped)])
                if jitter and it % 2 == 0:
                    xm = torch.flip(xm, dims=(3,))
                score = model(xm).gather(1, t)[:, 0]
                if variant == "preserve":
                    reward = score
                elif variant == "delete":
                    reward = -score
                else:
                    reward = score[: len(x)] - score[len(x) :]
                regul = area_gap(full.flatten(1), reference) * weight
                (grad,) = torch.autograd.grad((regul - reward).sum(), params)
                sgd.step(params, grad)
                params.data.clamp_(0, 1)
                weight *= 1.0035
            return cropped.detach()

        chunk = self.chunk(inputs, backward=True)
        with torch.enable_grad():
            maps = run_chunked(optimise, n, max(1, chunk // copies), desc=self.name)
        return self.explanation(maps, target)


def total_variation(mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean ``|d mask|^beta`` over vertical and horizontal neighbours, per image ``[N]``."""
    dy = (mask[:, :, 1:, :] - mask[:, :, :-1, :]).abs().pow(beta).flatten(1).mean(1)
    dx = (mask[:, :, :, 1:] - mask[:, :, :, :-1]).abs().pow(beta).flatten(1).mean(1)
    return dy + dx


@register
class MeaningfulPerturbation(Method):
    """Meaningful perturbation (Fong & Vedaldi 2017, deletion game).

    Minimises ``l1 * mean|1 - m| + tv * TV_beta(m) + softmax_c(phi(x; m))`` over a
    low-resolution mask ``m`` (bilinearly upsampled), where ``phi = m x + (1 - m)
    blur(x)`` plus Gaussian ``noise``; Adam (lr 0.1) from ``m = 1``. Weights as in
    the widely used re-implementation of the paper (mean-normalised terms).
    Hyperparameters: ``iterations`` (500), ``l1`` (0.01), ``tv`` (0.2), ``tv_beta``
    (3), ``lr`` (0.1), ``noise`` (0.2), ``mask_size`` (28 at 224 px, >= 8),
    ``blur`` (sigma, 10 px at 224 px), ``seed``, ``batch_size``. Maps: ``1 - m``.
    """

    hyperparameters = {
        "iterations": Param("int", 500, min=1),
        "l1": Param("float", 0.01, min=0),
        "tv": Param("float", 0.2, min=0),
        "tv_beta": Param("float", 3.0, min=0, open_min=True),
        "lr": Param("float", 0.1, min=0, open_min=True),
        "noise": Param("float", 0.2, min=0),
        "mask_size": Param("int", None, min=1, none=True, help="none: 28 at 224 px, >= 8"),
        "blur": Param("float", None, min=0, open_min=True, none=True),
        "seed": SEED,
        "batch_size": BATCH_SIZE,
        "memory": MEMORY,
    }
    name = "meaningful-perturbation"
    description = "meaningful perturbation: sparse smooth mask whose blurring deletes the class"
    family = "Perturbation"

    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor, logits: torch.Tensor
    ) -> Explanation:
        p = self.params
        iterations = positive_int("iterations", p.get("iterations", 500))
        l1 = positive_float("l1", p.get("l1", 0.01), allow_zero=True)
        tv = positive_float("tv", p.get("tv", 0.2), allow_zero=True)
        tv_beta = positive_float("tv_beta", p.get("tv_beta", 3.0))
        lr = positive_float("lr", p.get("lr", 0.1))
        noise = positive_float("noise", p.get("noise", 0.2), allow_zero=True)
        n, _c, h, w = inputs.shape
        size = min(h, w)
        mask_size = p.get("mask_size")
        mask_size = max(8, round(28 * size / REFERENCE_SIZE)) if mask_size is None else mask_size
        mask_size = positive_int("mask_size", mask_size)
        blur = _scaled(p.get("blur"), "blur", 10.0, size)
        seed = p.get("seed", 0)
        generator(inputs.device, seed)  # checked before any work

        def optimise(start: int, stop: int) -> torch.Tensor:
            # each chunk restarts the seeded sequence and shares each iteration's noise
            # among its images, so an image's mask does not depend on its batch
            g = generator(inputs.device, seed)
            x, t = inputs[start:stop], target[start:stop]
            model = fast_runner(self.model, x, "folded")
            blurred = gaussian_blur(x, blur)
            mask = torch.ones(stop - start, 1, mask_size, mask_size, device=x.device)
            mask.requires_grad_(True)
            opt = torch.optim.Adam([mask], lr=lr)
            for _ in range(iterations):
                up = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)
                xm = up * x + (1 - up) * blurred
                if noise > 0:
                    eps = torch.randn((1, *xm.shape[1:]), generator=g, device=x.device)
                    xm = xm + noise * eps.to(xm.dtype)
                prob = torch.softmax(model(xm), dim=1).gather(1, t[:, None])[:, 0]
                loss = l1 * (1 - mask).abs().flatten(1).mean(1) + tv * total_variation(
                    mask, tv_beta
                )
                opt.zero_grad()
                (loss + prob).sum().backward()
                opt.step()
                with torch.no_grad():
                    mask.clamp_(0, 1)
            up = F.interpolate(mask.detach(), size=(h, w), mode="bilinear", align_corners=False)
            return 1 - up

        chunk = self.chunk(inputs, backward=True)
        with torch.enable_grad():
            maps = run_chunked(optimise, n, chunk, desc=self.name)
        return self.explanation(maps, target)

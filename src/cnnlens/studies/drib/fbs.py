"""Feature Boosting and Suppression, the dynamic baseline of DRIB (Gao et al., ICLR 2019,
"Dynamic Channel Pruning: Feature Boosting and Suppression", section 3).

An FBS layer is a conv (+ BatchNorm) whose output channels are scaled per input by a
saliency predictor (their Eq. 5-9):

- ``s = ReLU(W ss(x) + b)``, ``ss(x)`` the mean ``|x|`` of each input channel (their
  subsampling by the L1 norm, divided by ``H W``), ``W`` a linear ``C_in -> C_out``;
- ``pi = wta_d(s)``: the ``ceil(d C_out)`` largest saliencies of each input are kept, the
  others set to 0 (k-winners-take-all);
- output ``pi * BN(conv(x))``, before the ReLU. Gao et al. replace BN's scale by ``pi``;
  here BN keeps its own scale (``pi`` multiplies it), which spans the same functions.

The layers are those DRIB gates (:func:`~.gate.default_layers`), so a conv that reads an
FBS layer's output reads only its active channels. :func:`fbs_macs` counts MACs per input
as :mod:`~.counting` counts DRIB's: active output channels (nonzeros of ``pi``) of an FBS
conv, active input channels of its readers, the predictor's ``C_in C_out`` added.
:func:`density_for` picks the largest ``d`` whose count stays within a MAC budget; training
is CE plus Gao et al.'s lasso ``lambda sum_l mean |s_l|`` (their Eq. 10) through
:func:`cnnlens.train.fit`.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ...chunking import run_chunked
from ...cost import macs as count_macs
from ...errors import ConfigError, LayerError
from ...hooks import frozen
from ...layers import get_layer, set_layer
from ...placement import model_device
from ...train import Classification
from .counting import DynamicMacs, _images
from .gate import default_layers


class FBSConv(nn.Module):
    """``wta_d(ReLU(W mean|x| + b)) * BN(conv(x))`` (Gao et al. 2019)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.Module | None, density: float, seed: int = 0):
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise LayerError(f"an FBS layer needs an nn.Conv2d, got {type(conv).__name__}")
        self.conv = conv
        self.bn = bn if bn is not None else nn.Identity()
        self.saliency = nn.Linear(conv.in_channels, conv.out_channels)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # scale ~1 at the start, ranks that depend on the input
            w = torch.randn(self.saliency.weight.shape, generator=g) * 0.01
            self.saliency.weight.copy_(w)
            self.saliency.bias.fill_(1.0)
        self.set_density(density)
        self.last_saliency: torch.Tensor | None = None
        self.last_pi: torch.Tensor | None = None

    def set_density(self, density: float) -> None:
        if not 0 < density <= 1:
            raise ConfigError(f"the FBS density d must lie in (0, 1], got {density}")
        self.density = float(density)
        self.keep = keep_count(density, self.conv.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.saliency(x.abs().mean((2, 3))))
        top = s.topk(self.keep, dim=1).indices
        pi = s * torch.zeros_like(s).scatter_(1, top, 1.0)
        self.last_saliency, self.last_pi = s, pi.detach()
        return self.bn(self.conv(x)) * pi[:, :, None, None]

    def extra_repr(self) -> str:
        return f"keep={self.keep}/{self.conv.out_channels}"


def keep_count(density: float, channels: int) -> int:
    """``ceil(d C)``, at least 1."""
    return max(1, min(channels, math.ceil(density * channels - 1e-9)))


def fbs(model: nn.Module, *, density: float = 0.5, seed: int = 0) -> nn.Module:
    """A copy of a cnnlens CIFAR ResNet or VGG with DRIB's gated layers made FBS layers
    (the original is untouched); the copy records ``fbs = {"layers", "links"}``."""
    from ...nets.resnet import CifarResNet

    specs = default_layers(model)
    out = copy.deepcopy(model)
    for i, spec in enumerate(specs):
        conv = get_layer(out, spec.conv)
        bn = get_layer(out, spec.bn) if spec.bn is not None else None
        if spec.bn is not None:
            set_layer(out, spec.bn, nn.Identity())
        set_layer(out, spec.conv, FBSConv(conv, bn, density, seed=seed + i))
    links = {s.conv: s.reads for s in specs if s.reads}
    if isinstance(model, CifarResNet):
        links = {s.conv.replace(".conv1", ".conv2"): s.conv for s in specs}
    out.fbs = {"layers": [s.conv for s in specs], "links": links}
    return out


def fbs_layers(model: nn.Module) -> dict[str, FBSConv]:
    found = {n: m for n, m in model.named_modules() if isinstance(m, FBSConv)}
    if not found:
        raise LayerError(f"{type(model).__name__} has no FBS layers: build one with fbs(model)")
    return found


def set_density(model: nn.Module, density: float) -> None:
    for layer in fbs_layers(model).values():
        layer.set_density(density)


def _factors(model: nn.Module, full: dict[str, int], active: dict[str, torch.Tensor], n: int):
    layers = fbs_layers(model)
    links = model.fbs["links"]
    modules = dict(model.named_modules())
    per_layer = {}
    for name, value in full.items():
        factor = torch.ones(n, dtype=torch.float64)
        owner = name[: -len(".conv")] if name.endswith(".conv") else None
        reader = owner if owner in layers else name
        if owner in layers:
            factor = factor * active[owner] / layers[owner].conv.out_channels
        if reader in links:
            conv = modules[name]
            factor = factor * active[links[reader]] / conv.in_channels
        per_layer[name] = value * factor
    return per_layer


def _before(model: nn.Module, full: dict[str, int]) -> int:
    predictors = {f"{n}.saliency" for n in fbs_layers(model)}
    return sum(v for k, v in full.items() if k not in predictors)


def fbs_macs(model: nn.Module, data, *, batch_size: int = 256) -> DynamicMacs:
    """MACs per input of an FBS ``model`` on ``data`` (eval mode), counted as
    :func:`~.counting.dynamic_macs` counts DRIB's; ``before`` excludes the predictors."""
    layers = fbs_layers(model)
    x, _ = _images(data)
    device = model_device(model)

    @torch.no_grad()
    def run(a: int, b: int) -> tuple[torch.Tensor, ...]:
        model(x[a:b].to(device))
        return tuple((g.last_pi != 0).sum(1).double().cpu() for g in layers.values())

    with frozen(model):
        counts = run_chunked(run, len(x), batch_size)
    active = dict(zip(layers, counts, strict=True))
    full = count_macs(model, tuple(x.shape[1:])).layers
    per_layer = _factors(model, full, active, len(x))
    total = torch.stack(list(per_layer.values())).sum(0)
    return DynamicMacs(
        total, {k: float(v.mean()) for k, v in per_layer.items()}, _before(model, full)
    )


def upper_macs(model: nn.Module, input_size) -> int:
    """MACs per input when every kept channel is active (``ceil(d C)`` of each FBS layer):
    the most an input can cost."""
    full = count_macs(model, tuple(input_size)).layers
    active = {n: torch.tensor([float(g.keep)]) for n, g in fbs_layers(model).items()}
    return int(sum(float(v) for v in _factors(model, full, active, 1).values()))


def density_for(model: nn.Module, input_size, budget: int, *, steps: int = 14) -> float:
    """The largest density ``d`` (bisected) whose :func:`upper_macs` is within ``budget``."""
    lo, hi = 0.0, 1.0
    set_density(model, hi)
    if upper_macs(model, input_size) <= budget:
        return hi
    set_density(model, 1e-6)
    if upper_macs(model, input_size) > budget:
        raise ConfigError(
            f"FBS cannot reach {budget / 1e6:.2f} M MACs: one channel per FBS layer costs "
            f"{upper_macs(model, input_size) / 1e6:.2f} M"
        )
    for _ in range(steps):
        mid = (lo + hi) / 2
        set_density(model, mid)
        if upper_macs(model, input_size) <= budget:
            lo = mid
        else:
            hi = mid
    best = max(lo, 1e-6)
    set_density(model, best)
    return best


def fbs_objective(model: nn.Module, lam: float = 1e-8) -> Classification:
    """CE + ``lam sum_l mean |s_l|`` over the FBS layers' saliencies of the batch (Gao et
    al. 2019, Eq. 10, their lambda 1e-8 by default; averaged over the batch)."""
    if not lam >= 0:
        raise ConfigError(f"the FBS lasso weight must be >= 0, got {lam}")
    layers = list(fbs_layers(model).values())

    def lasso(_model, _x, _y, _logits) -> torch.Tensor:
        return lam * torch.stack([g.last_saliency.abs().sum(1).mean() for g in layers]).sum()

    return Classification(extra=lasso)

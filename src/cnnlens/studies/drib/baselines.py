"""Structured pruning baselines for DRIB at a given MAC budget (paper 000, Tables 1-2).

Static baselines the dynamic gating is compared with, all removing whole
channels through Torch-Pruning's dependency graph (which couples each conv with
its BatchNorm, the next layer's inputs and residual additions):

- ``"l1"``: L1-norm filter pruning (Li et al., "Pruning Filters for Efficient
  ConvNets", ICLR 2017, section 3.1): in every prunable layer the filters with
  the smallest ``sum |W|`` go, the same share in each layer
  (``MagnitudeImportance(p=1, normalizer=None, group_reduction="first")``:
  the pruned conv's own filter norms, nothing else).
- ``"slimming"``: network slimming (Liu et al., ICCV 2017): channels ranked by
  ``|gamma|`` of their BatchNorm, one global threshold over all layers
  (``BNScaleImportance``, global pruning). The sparsity training before it
  (Eq. 1, ``L = CE + lambda * sum |gamma|``) is :func:`slimming_objective`.
- ``"fpgm"``: filter pruning via geometric median (He et al., CVPR 2019, section 3.4):
  in every prunable layer the same share of filters goes, those nearest the layer's
  geometric median, i.e. with the smallest ``sum_j ||F_i - F_j||_2`` over the layer's
  filters (:class:`GeometricMedianImportance`; Torch-Pruning's ``FPGMImportance``
  measures distances between ``|F|^p`` instead of the filters, so it is not used).
- ``"taylor"``: first-order Taylor importance (Molchanov et al., CVPR 2019, Eq. 8 on the
  filter's weights): ``sum over batches of (sum_s g_s w_s)^2`` for each filter, from the
  gradients of the cross-entropy on a few training batches (:func:`taylor_scores`),
  ranked globally over all layers as in the paper (:class:`TaylorScoreImportance`).
- ``"sfp"``: soft filter pruning (He et al., IJCAI 2018, Algorithm 1): the same share of
  filters in every layer, by L2 norm; during the fine-tune the filters of smallest L2 norm
  (with their BatchNorm's scale and shift, so the channel outputs 0) are set to zero after
  every epoch (and before the first) but keep being updated, so a
  zeroed filter may come back (:func:`soft_zeroing`); then the pruned copy is cut, which
  removes the zeroed filters (:func:`~.baseline_study.run_baselines` does the steps).

:func:`prune_to_macs` bisects the pruning ratio until the pruned copy's MAC
count (:func:`cnnlens.cost.macs`) is at or just under the budget. For a CIFAR
ResNet with the parameter-free zero-padding shortcut (option A) only the first
conv of each block is pruned (Li et al.'s scheme for ResNet-56), since the
padded residual stream cannot be traced as coupled channels.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...cost import macs as count_macs
from ...errors import ConfigError, LayerError
from ...placement import placement
from ...train import Classification

METHODS = ("l1", "slimming", "fpgm", "taylor", "sfp")
GLOBAL = ("slimming", "taylor")  # one threshold over all layers; the others: a share per layer
TAYLOR_BATCHES = 4  # batches of the training data whose gradients score the filters
TAYLOR_BATCH_SIZE = 64
SEARCH_STEPS = 14  # bisection steps on the pruning ratio (2^-14 of the range)
MAX_LAYER_RATIO = 0.9  # at most this share of one layer's channels goes (slimming, global)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class PrunedModel:
    """A pruned copy, the ratio that reached the budget and its MACs before and after."""

    model: nn.Module
    method: str
    ratio: float
    macs_before: int
    macs: int
    budget: int

    @property
    def reduction(self) -> float:
        """MAC reduction in percent, ``(M_before - M_after) / M_before x 100``."""
        return 100.0 * (self.macs_before - self.macs) / self.macs_before


def mac_budget(before: int, *, macs: float | None = None, reduction: float | None = None) -> int:
    """The MAC target from an absolute count or a reduction in percent (exactly one of them)."""
    if (macs is None) == (reduction is None):
        raise ConfigError("give exactly one of a MAC target (macs) or a reduction in percent")
    if reduction is not None:
        if not 0 < reduction < 100:
            raise ConfigError(f"reduction must be a percentage in (0, 100), got {reduction}")
        return int(before * (1 - reduction / 100.0))
    if not 0 < macs < before:
        raise ConfigError(f"MAC target must be in (0, {before}) (the unpruned model), got {macs}")
    return int(macs)


def default_ignored(model: nn.Module) -> list[str]:
    """Names of the layers whose output channels stay: the final linear layer, and in a
    CIFAR ResNet with padding shortcuts every conv but the first of each block."""
    from ...layers import final_linear
    from ...nets.resnet import BasicBlock, PadShortcut

    ignored = [final_linear(model)[0]] if _has_linear(model) else []
    if any(isinstance(m, PadShortcut) for m in model.modules()):
        inside = set()
        for name, m in model.named_modules():
            if isinstance(m, BasicBlock):
                inside.add(f"{name}.conv1")
        ignored += [
            n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in inside
        ]
    return ignored


def channel_ops(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Parameter-free ops of one forward that pad or slice the channel dimension.

    Torch-Pruning treats them as element-wise and maps channel indices through them
    unchanged, which silently misaligns the layers around them; a model with one is
    pruned only with the layers around it named as ignored.
    """
    x = example.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
    found: list[str] = []
    seen: set[int] = set()
    stack = [out.grad_fn] if out.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        name = type(node).__name__
        if name.startswith("ConstantPadNd") and any(getattr(node, "_saved_pad", ())[4:]):
            found.append(f"channel padding {tuple(node._saved_pad)}")
        elif name.startswith("Slice") and getattr(node, "_saved_dim", None) == 1:
            start, end = node._saved_start, node._saved_end
            if (start not in (None, 0)) or (end is not None and end < 2**62):
                found.append(f"channel slice [{start}:{end}]")
        stack.extend(fn for fn, _ in node.next_functions)
    return found


def resolve_ignored(
    model: nn.Module, input_size: Sequence[int], ignored: Sequence[str] | None
) -> list[str]:
    """``ignored`` as given, or :func:`default_ignored` after checking that the model has
    no channel padding or slicing Torch-Pruning would misread (:func:`channel_ops`)."""
    if ignored is not None:
        return list(ignored)
    if not _known_shortcuts(model):
        device, dtype = placement(model)
        example = torch.zeros(1, *input_size, device=device, dtype=dtype)
        was_training = model.training
        model.eval()
        try:
            ops = channel_ops(model, example)
        finally:
            model.train(was_training)
        if ops:
            raise LayerError(
                f"Torch-Pruning cannot trace {type(model).__name__}: its forward has "
                f"{', '.join(sorted(set(ops)))}, which would misalign the pruned channels; "
                "name the layers whose outputs reach it as ignored"
            )
    return default_ignored(model)


def _known_shortcuts(model: nn.Module) -> bool:
    """True for a cnnlens ResNet with padding shortcuts (handled by :func:`default_ignored`)."""
    from ...nets.resnet import PadShortcut

    return any(isinstance(m, PadShortcut) for m in model.modules())


def _has_linear(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Linear) for m in model.modules())


def _root_filters(group) -> tuple[nn.Module, list[int]] | None:
    """The conv whose output channels a Torch-Pruning group removes, and their indices."""
    import torch_pruning as tp

    dep, idxs = group[0]
    layer = dep.target.module
    if dep.handler != tp.pruner.function.prune_conv_out_channels or not isinstance(
        layer, nn.Conv2d
    ):
        return None
    return layer, list(idxs)


class GeometricMedianImportance:
    """FPGM's criterion (He et al. 2019): ``sum_j ||F_i - F_j||_2`` over the layer's
    filters; the filters with the smallest sum lie nearest the geometric median."""

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        found = _root_filters(group)
        if found is None:
            return None
        layer, idxs = found
        w = layer.weight.detach().flatten(1).double()
        return torch.cdist(w, w).sum(1)[idxs].float()


TAYLOR_ATTRIBUTE = "_cnnlens_taylor_score"


class TaylorScoreImportance:
    """Molchanov et al.'s scores, read from the conv they were stored on
    (:func:`taylor_scores`, set by :func:`prune_copy` on its copy)."""

    def __call__(self, group) -> torch.Tensor | None:
        found = _root_filters(group)
        if found is None:
            return None
        layer, idxs = found
        score = getattr(layer, TAYLOR_ATTRIBUTE, None)
        if score is None:
            raise ConfigError("taylor pruning needs the scores of taylor_scores() on every conv")
        return score[idxs]


def taylor_scores(
    model: nn.Module, data, *, batches: int = TAYLOR_BATCHES, batch_size: int = TAYLOR_BATCH_SIZE
) -> dict[str, torch.Tensor]:
    """Per conv name, ``sum_b (sum_s g_s w_s)^2`` per output filter (Molchanov et al. 2019,
    Eq. 8, the group's first-order Taylor term squared, summed over ``batches`` batches of
    ``data``), from the cross-entropy's gradients. A copy in eval mode takes the backward
    passes (no BatchNorm statistic moves), so ``model`` keeps its weights and ``.grad``."""
    from ...data import as_dataset

    dataset = as_dataset(data)
    if batches < 1 or batch_size < 1:
        raise ConfigError(f"batches and batch_size must be >= 1, got {batches}, {batch_size}")
    scored = copy.deepcopy(model).eval()
    device, _ = placement(scored)
    convs = {n: m for n, m in scored.named_modules() if isinstance(m, nn.Conv2d)}
    sums = {n: torch.zeros(m.out_channels, dtype=torch.float64) for n, m in convs.items()}
    for b in range(batches):
        start = b * batch_size
        if start >= len(dataset):
            break
        x, y = dataset.tensors(range(start, min(start + batch_size, len(dataset))))
        scored.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(scored(x.to(device)), y.to(device))
            loss.backward()
        for n, m in convs.items():
            if m.weight.grad is not None:
                term = (m.weight.grad * m.weight).detach().flatten(1).sum(1)
                sums[n] += term.double().pow(2).cpu()
    return {n: v.float() for n, v in sums.items()}


def _importance(method: str):
    import torch_pruning as tp

    if method == "l1":
        return tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="first")
    if method == "fpgm":
        return GeometricMedianImportance()
    if method == "taylor":
        return TaylorScoreImportance()
    if method == "sfp":
        return tp.importance.MagnitudeImportance(p=2, normalizer=None, group_reduction="first")
    return tp.importance.BNScaleImportance(normalizer=None)


def removed_filters(model: nn.Module, pruned: nn.Module) -> dict[str, int]:
    """Per conv name, how many output filters ``pruned`` (a pruned copy) lacks."""
    new = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    return {
        n: m.out_channels - new[n]
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and n in new and m.out_channels > new[n]
    }


def _norm_after(model: nn.Module, name: str) -> nn.Module | None:
    """The BatchNorm right after conv ``name`` in module order with its channel count."""
    modules = list(model.named_modules())
    index = next(i for i, (n, _) in enumerate(modules) if n == name)
    conv = modules[index][1]
    for _n, m in modules[index + 1 :]:
        if isinstance(m, nn.Conv2d):
            return None
        if isinstance(m, _BATCHNORMS) and m.affine and m.num_features == conv.out_channels:
            return m
    return None


@torch.no_grad()
def zero_smallest_filters(model: nn.Module, counts: dict[str, int]) -> None:
    """Set the ``counts[name]`` filters of smallest L2 norm of each named conv to zero
    (weights, bias, and the scale and shift of the BatchNorm after it, so the channel
    outputs exactly 0 and cutting it changes nothing): soft filter pruning's step (He et
    al. 2018)."""
    for name, k in counts.items():
        conv = model.get_submodule(name)
        norms = conv.weight.flatten(1).norm(dim=1)
        drop = norms.topk(k, largest=False).indices
        conv.weight[drop] = 0
        if conv.bias is not None:
            conv.bias[drop] = 0
        norm = _norm_after(model, name)
        if norm is not None:
            norm.weight[drop] = 0
            norm.bias[drop] = 0


def soft_zeroing(counts: dict[str, int]):
    """A :func:`cnnlens.train.fit` callback zeroing the smallest filters after each epoch."""

    def callback(_epoch: int, model: nn.Module, _record: dict) -> None:
        zero_smallest_filters(model, counts)

    return callback


def prune_copy(
    model: nn.Module,
    example: torch.Tensor,
    *,
    method: str,
    ratio: float,
    ignored: Sequence[str] = (),
    scores: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """A copy of ``model`` with ``ratio`` of its prunable channels removed by ``method``.

    ``scores``: :func:`taylor_scores` of ``model`` (``method="taylor"`` only).
    ``model`` is not changed. The copy is traced in eval mode (no BatchNorm statistic
    moves) and checked to give logits of the original shape; a model Torch-Pruning
    cannot trace raises a :class:`~cnnlens.errors.LayerError`.
    """
    import torch_pruning as tp

    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
    pruned = copy.deepcopy(model).eval()
    try:
        skip = [pruned.get_submodule(n) for n in ignored]
    except AttributeError as exc:
        raise LayerError(f"ignored layer not found in {type(model).__name__}: {exc}") from None
    if method == "taylor":
        if scores is None:
            raise ConfigError("taylor pruning needs scores=taylor_scores(model, data)")
        for name, m in pruned.named_modules():
            if isinstance(m, nn.Conv2d) and name in scores:
                setattr(m, TAYLOR_ATTRIBUTE, scores[name].to(m.weight.device))
    cls = tp.pruner.BNScalePruner if method == "slimming" else tp.pruner.MagnitudePruner
    options = {"global_pruning": True, "max_pruning_ratio": MAX_LAYER_RATIO}
    try:
        with torch.no_grad():
            expected = pruned(example).shape
        pruner = cls(
            pruned,
            example,
            importance=_importance(method),
            pruning_ratio=ratio,
            ignored_layers=skip,
            **(options if method in GLOBAL else {}),
        )
        pruner.step()
        with torch.no_grad():
            got = pruned(example).shape
        for m in pruned.modules():
            if hasattr(m, TAYLOR_ATTRIBUTE):
                delattr(m, TAYLOR_ATTRIBUTE)
    except Exception as exc:  # tracing or the pruned forward failed: the graph was not coupled
        raise LayerError(
            f"Torch-Pruning cannot prune {type(model).__name__} consistently "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "a parameter-free op that changes the channel count (padding, concatenating "
            "constants) cannot be traced: pass the layers around it as ignored"
        ) from None
    if got != expected:
        raise LayerError(
            f"pruning {type(model).__name__} changed its output from {tuple(expected)} to "
            f"{tuple(got)}; pass the final layer as ignored"
        )
    return pruned


def prune_to_macs(
    model: nn.Module,
    input_size: Sequence[int],
    *,
    method: str = "l1",
    macs: float | None = None,
    reduction: float | None = None,
    ignored: Sequence[str] | None = None,
    steps: int = SEARCH_STEPS,
    data=None,
) -> PrunedModel:
    """Prune a copy of ``model`` by ``method`` to at most the MAC budget (just under it).

    ``input_size`` is one image's ``(C, H, W)``. The budget is ``macs`` (a count)
    or ``reduction`` (percent of the unpruned count). The pruning ratio is bisected
    over ``steps`` steps; the smallest tried ratio whose copy fits is kept. ``data``:
    the training images whose gradients score the filters (``"taylor"`` only).
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
    if method == "taylor" and data is None:
        raise ConfigError("taylor pruning needs data (training images for its gradients)")
    device, dtype = placement(model)
    example = torch.zeros(1, *input_size, device=device, dtype=dtype)
    before = count_macs(model, tuple(input_size)).total
    budget = mac_budget(before, macs=macs, reduction=reduction)
    ignored = resolve_ignored(model, input_size, ignored)

    scores = taylor_scores(model, data) if method == "taylor" else None

    def attempt(ratio: float) -> tuple[nn.Module, int]:
        m = prune_copy(model, example, method=method, ratio=ratio, ignored=ignored, scores=scores)
        return m, count_macs(m, tuple(input_size)).total

    lo, hi = 0.0, MAX_LAYER_RATIO
    best, best_macs = attempt(hi)
    if best_macs > budget:
        raise ConfigError(
            f"{method} pruning reaches {best_macs / 1e6:.2f} M MACs at most "
            f"(ratio {hi}); the budget {budget / 1e6:.2f} M cannot be reached"
            + (
                " (ties in the BatchNorm scales: train with the sparsity penalty first)"
                if method == "slimming" and best_macs == before
                else ""
            )
        )
    best_ratio = hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        m, value = attempt(mid)
        if value <= budget:
            hi, best, best_macs, best_ratio = mid, m, value, mid
        else:
            lo = mid
    return PrunedModel(best, method, best_ratio, before, best_macs, budget)


def slimming_batchnorms(model: nn.Module, input_size: Sequence[int], ignored: Sequence[str]):
    """The BatchNorm layers whose channels slimming may remove (those coupled to a
    prunable layer's output in Torch-Pruning's dependency graph)."""
    import torch_pruning as tp

    device, dtype = placement(model)
    example = torch.zeros(1, *input_size, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        skip = [model.get_submodule(n) for n in ignored]
        found: dict[int, nn.Module] = {}
        for group in graph.get_all_groups(ignored_layers=skip, root_module_types=[nn.Conv2d]):
            for dep, _idxs in group:
                module = dep.target.module
                if isinstance(module, _BATCHNORMS) and module.affine:
                    found[id(module)] = module
    finally:
        model.train(was_training)
    return list(found.values())


def slimming_objective(batchnorms: Sequence[nn.Module], lam: float = 1e-4) -> Classification:
    """Cross-entropy plus ``lam * sum |gamma|`` over ``batchnorms`` (Liu et al. 2017, Eq. 1,
    with g(s) = |s|), for the sparsity training through :func:`cnnlens.train.fit`."""
    if not lam >= 0:
        raise ConfigError(f"the sparsity weight lambda must be >= 0, got {lam}")
    if not batchnorms:
        raise LayerError("the model has no BatchNorm layer to slim (network slimming needs one)")

    def penalty(_model, _x, _y, _logits) -> torch.Tensor:
        return lam * torch.stack([bn.weight.abs().sum() for bn in batchnorms]).sum()

    return Classification(extra=penalty)

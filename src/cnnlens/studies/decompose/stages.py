"""r_A against depth inside one network: the depth study for the ImageNet-shaped families.

Paper 002 (section 5.2.2, Tables 2-6, Figure 4) compares r_A across depth *variants*
of a family (ResNet-50/101/152, DenseNet-121/169, EfficientNet-B0..B3) and reports
that it grows with depth (EfficientNet the exception). cnnlens builds one depth of
each ImageNet family (:mod:`cnnlens.nets.imagenet`), so here the depth axis runs
*through* one trained network: at the end of each stage the output is global-average
pooled into an ``m_d``-vector (the same reduction the network's own head reads), a
linear probe (Alain & Bengio 2017, the paper's ref. [19]) is fitted on it, and
Algorithm 1 decomposes the probe with ``k1 = k2 = round(ratio x m_d)``, so ``k2 / m``
stays fixed across depth as the paper keeps it fixed across variants. The last point is
the head's own input: there the network's trained head is decomposed too (the paper's
r_A of the network), next to its probe.

Depth points per family (:data:`DEPTH_POINTS`, module names; the last point, the head
input, is implied):

- ResNet-18/50: ``layer1..layer3`` (each stage's last block, after its ReLU).
- DenseNet-121: ``features.transition{1,2,3}.relu``: BN-ReLU of dense block ``i``'s
  concatenated output (the block's every layer, as the next layer reads it); the last
  point is block 4 after ``norm5`` and the functional ReLU.
- EfficientNet-B0: ``features.1..features.7``, the seven MBConv stages' outputs (linear
  bottlenecks after squeeze-excitation and the projection: signed, so Algorithm 1's
  l1 magnitude ranks them); the last point is the 1x1 conv to 1280 after SiLU.
- MobileNetV2: the ends of its seven bottleneck stages, ``features.1, 3, 6, 10, 13,
  16, 17`` (linear bottlenecks, signed); the last point is the 1x1 conv to 1280.
- VGG-16-BN: the five max pools ``features.6, 13, 23, 33, 43``; the last point is the
  4096-vector after the fully connected layers.
- ConvNeXt-T: the four stages ``features.1, 3, 5`` (then the head's LayerNorm'd pool).

``depth`` of a point is the number of convolution and linear layers that ran before
its output (counted in one probe forward), the paper's "number of layers".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...analysis.features import Features, locate_head
from ...chunking import chunk_size, run_chunked
from ...data.adapt import as_dataset
from ...data.base import ImageDataset
from ...errors import InputError
from ...hooks import HookSet, frozen
from ...layers import get_layer
from ...placement import model_device
from .influential import InfluentialFeatures
from .relative import relative_accuracy

HEAD_INPUT = "head input"
"""The name of the last depth point: the vector the network's final linear layer reads."""

DEPTH_POINTS: dict[str, tuple[str, ...]] = {
    "resnet18": ("layer1", "layer2", "layer3"),
    "resnet50": ("layer1", "layer2", "layer3"),
    "densenet121": tuple(f"features.transition{i}.relu" for i in (1, 2, 3)),
    "efficientnet_b0": tuple(f"features.{i}" for i in range(1, 8)),
    "mobilenet_v2": tuple(f"features.{i}" for i in (1, 3, 6, 10, 13, 16, 17)),
    "vgg16_bn": tuple(f"features.{i}" for i in (6, 13, 23, 33, 43)),
    "convnext_tiny": ("features.1", "features.3", "features.5"),
}
"""Module names whose pooled outputs form the depth axis, shallow to deep, per family."""

PROBE_C = 1.0
PROBE_MAX_ITER = 2000


def depth_points(arch: str) -> tuple[str, ...]:
    """The depth points of ``arch`` (:data:`DEPTH_POINTS`) followed by :data:`HEAD_INPUT`."""
    if arch not in DEPTH_POINTS:
        raise InputError(
            f"no depth points for {arch!r}; the families with them are {sorted(DEPTH_POINTS)}"
        )
    return (*DEPTH_POINTS[arch], HEAD_INPUT)


def _pool(out: torch.Tensor) -> torch.Tensor:
    """Global average over every axis after the channels: ``[N,C,...] -> [N,C]``."""
    return out.flatten(2).mean(2) if out.dim() > 2 else out


def layer_depths(model: nn.Module, layers: Sequence[str], probe: torch.Tensor) -> list[int]:
    """Convolution + linear layers that ran before each of ``layers`` gave its output, from
    one forward of ``probe``; :data:`HEAD_INPUT` counts up to the final layer's input."""
    head_name, _ = locate_head(model, probe)
    counter = [0]
    seen: dict[str, int] = {}
    with frozen(model), HookSet() as hooks, torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                hooks.forward(module, lambda *_: counter.__setitem__(0, counter[0] + 1))
        for name in layers:

            def mark(*_, n=name) -> None:  # returns None: the hook changes nothing
                seen[n] = counter[0]

            if name == HEAD_INPUT:
                hooks.forward_pre(get_layer(model, head_name), mark)
            else:
                hooks.forward(get_layer(model, name), mark)
        model(probe[:1])
    missing = [n for n in layers if n not in seen]
    if missing:
        raise InputError(f"layers {missing} never ran in a forward of {type(model).__name__}")
    return [seen[n] for n in layers]


def pooled_features(
    model: nn.Module, data: ImageDataset, layers: Sequence[str], *, batch_size: int | None = None
) -> tuple[dict[str, torch.Tensor], torch.Tensor, str]:
    """Pooled ``[N, m_d]`` outputs of ``layers`` (:data:`HEAD_INPUT`: the head's input) and
    the model's logits ``[N,K]`` over ``data``, in one pass; also the head's name."""
    data = as_dataset(data)
    device = model_device(model)
    probe = data.tensors(torch.arange(1))[0].to(device)
    head_name, head = locate_head(model, probe)
    inner = [n for n in layers if n != HEAD_INPUT]
    modules = [get_layer(model, n) for n in inner]  # unknown names fail before the pass
    with frozen(model):
        size = chunk_size(model, probe, backward=False, batch_size=batch_size)

        def run(start: int, stop: int) -> tuple[torch.Tensor, ...]:
            x, _ = data.tensors(torch.arange(start, stop))
            store: dict[str, torch.Tensor] = {}
            with HookSet() as hooks, torch.no_grad():
                for name, module in zip(inner, modules, strict=True):
                    hooks.forward(
                        module, lambda _m, _i, out, n=name: store.__setitem__(n, _pool(out))
                    )
                hooks.forward_pre(
                    head, lambda _m, inp: store.__setitem__(HEAD_INPUT, inp[0].flatten(1))
                )
                logits = model(x.to(device))
            return (*(store[n] for n in layers), logits)

        parts = run_chunked(run, len(data), size)
    return dict(zip(layers, parts[:-1], strict=True)), parts[-1], head_name


def fit_probe(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> nn.Linear:
    """A linear probe on ``features`` ``[N,m]``: multinomial logistic regression on the
    standardised features (scikit-learn, L2 with C = :data:`PROBE_C`), folded back into an
    ``nn.Linear`` on the raw features, so Algorithm 1 ranks the same values the probe reads."""
    from sklearn.linear_model import LogisticRegression

    x = features.detach().double().cpu()
    y = labels.cpu().numpy()
    if len(set(y.tolist())) != n_classes:
        raise InputError(f"the probe needs images of all {n_classes} classes")
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    clf = LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER)
    clf.fit(((x - mean) / std).numpy(), y)
    w = torch.as_tensor(clf.coef_) / std  # [K, m] on raw features
    b = torch.as_tensor(clf.intercept_) - w @ mean
    linear = nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        linear.weight.copy_(w.to(features.dtype))
        linear.bias.copy_(b.to(features.dtype))
    return linear.to(features.device)


def decomposed_scores(
    head: nn.Linear,
    train: torch.Tensor,
    train_labels: torch.Tensor,
    test: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    k: int,
    n_classes: int,
) -> dict:
    """Algorithm 1 (k1 = k2 = ``k``) on ``train`` features, scored on ``test``: A_f, A_d, r_A
    of ``head`` and its decomposition (:func:`~.relative.relative_accuracy`)."""
    est = InfluentialFeatures(k1=k, k2=k).fit_features(train, train_labels, n_classes=n_classes)
    est.head_name_ = "head"
    holder = nn.Module()
    holder.head = head
    with torch.no_grad():
        feats = Features(test, head(test), test_labels.to(test.device), "head")
    scores = relative_accuracy(holder, est, feats)
    return {"A_f": scores["A_f"], "A_d": scores["A_d"], "r_A": scores["r_A"]}


def _ratios(ratio: float | Sequence[float]) -> tuple[float, ...]:
    ratios = (ratio,) if isinstance(ratio, (int, float)) else tuple(ratio)
    for r in ratios:
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0 < r <= 1:
            raise InputError(f"ratio must lie in (0, 1] (k1 = k2 = round(ratio x m)), got {r!r}")
    if not ratios:
        raise InputError("ratio must name at least one value in (0, 1]")
    return ratios


def stage_depth(
    model: nn.Module,
    train: ImageDataset,
    test: ImageDataset,
    *,
    layers: Sequence[str],
    ratio: float | Sequence[float] = 5 / 64,
    batch_size: int | None = None,
) -> list[dict]:
    """One row per depth point of ``layers`` (shallow to deep, :data:`HEAD_INPUT` last if
    present) and ``ratio`` (one value or several: the features and probes are shared): its
    ``depth`` (layers run before it), width ``m``, ``k = round(ratio x m)`` and the probe's
    ``A_f``, ``A_d``, ``r_A``; at :data:`HEAD_INPUT` also the trained head's (``A_f_head``,
    ``A_d_head``, ``r_A_head``). The model is left as found."""
    ratios = _ratios(ratio)
    if not layers:
        raise InputError("layers must name at least one depth point")
    train, test = as_dataset(train), as_dataset(test)
    n_classes = train.num_classes
    probe = train.tensors(torch.arange(1))[0].to(model_device(model))
    depths = layer_depths(model, layers, probe)
    train_feats, _, head_name = pooled_features(model, train, layers, batch_size=batch_size)
    test_feats, _, _ = pooled_features(model, test, layers, batch_size=batch_size)
    device = model_device(model)
    y_train, y_test = train.labels.to(device), test.labels.to(device)
    rows = []
    for index, (name, depth) in enumerate(zip(layers, depths, strict=True), start=1):
        f_train, f_test = train_feats[name], test_feats[name]
        m = int(f_train.shape[1])
        heads = {"": fit_probe(f_train, y_train, n_classes)}
        if name == HEAD_INPUT:
            heads["_head"] = get_layer(model, head_name)
        for r in ratios:
            k = max(1, round(r * m))
            row = {"index": index, "layer": name, "depth": depth, "m": m, "ratio": r}
            row.update({"k1": k, "k2": k})
            for suffix, head in heads.items():
                scores = decomposed_scores(
                    head, f_train, y_train, f_test, y_test, k=k, n_classes=n_classes
                )
                row.update({f"{key}{suffix}": value for key, value in scores.items()})
            rows.append(row)
    return rows

"""Find the parts of a classifier by name: any layer, the "auto" layer for
CAMs, the final linear layer and the penultimate features it reads.

Layers are named as in ``model.named_modules()`` (``"layer3.2.conv2"``).
These helpers work on any ``nn.Module`` classifier, cnnlens' own or a user's.
"""

from __future__ import annotations

import difflib
import weakref

import torch
from torch import nn

from .errors import LayerError


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; a :class:`LayerError` suggests near names."""
    try:
        return model.get_submodule(name)
    except (AttributeError, TypeError):
        pass
    modules = dict(model.named_modules())
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise LayerError(f"model {type(model).__name__} has no layer {name!r}{hint}")


def set_layer(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule ``name`` of ``model`` by ``new`` (in place)."""
    get_layer(model, name)
    parent_name, _, child = name.rpartition(".")
    parent = get_layer(model, parent_name) if parent_name else model
    setattr(parent, child, new)


_AUTO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (key, name)
_FINAL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (key, (name, m))


def structure_key(model: nn.Module, x: torch.Tensor) -> tuple:
    """What a probe result depends on: the module tree, the parameters' versions, the input."""
    modules = list(model.modules())  # one walk of the tree: this runs once per chunk
    return (
        tuple(map(id, modules)),
        tuple(
            (id(t), t._version)
            for m in modules
            for group in (m._parameters, m._buffers)
            for t in group.values()
            if t is not None
        ),
        tuple(x.shape[1:]),
        x.dtype,
        str(x.device),
    )


def cached_per_model(cache: weakref.WeakKeyDictionary, model: nn.Module, probe: torch.Tensor, find):
    """``find()``, remembered per model until its structure or the input shape changes."""
    key = structure_key(model, probe)
    hit = cache.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    value = find()
    cache[model] = (key, value)
    return value


def _trace_outputs(
    model: nn.Module, x: torch.Tensor
) -> tuple[list[tuple[str, nn.Module, torch.Tensor]], torch.Tensor]:
    """(name, module, output) for every module, in the order they finish, and the
    model's output: one forward without gradients, in eval mode (each module's
    mode restored afterwards)."""
    order: list[tuple[str, nn.Module, torch.Tensor]] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def record(m, _i, out, name=name):
            if isinstance(out, torch.Tensor):
                order.append((name, m, out.detach()))

        handles.append(module.register_forward_hook(record))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            output = model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
    return order, output


def _probe_input(model: nn.Module, x: torch.Tensor | None) -> torch.Tensor:
    if x is not None:
        return x[:1]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = first_conv.in_channels if first_conv is not None else 3
    return torch.zeros(1, channels, 32, 32, device=device)


_RESAMPLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def auto_layer(model: nn.Module, x: torch.Tensor | None = None) -> str:
    """Name of the last spatial feature map before the network pools it away.

    Runs one forward (on ``x[:1]``, or a zero 32x32 probe) and returns the
    outermost module whose output is the last ``[N,C,H,W]`` map with
    ``H*W > 1``: for a CIFAR ResNet that is ``"layer3"`` (the last block's
    output after its residual ReLU), for a VGG its last convolutional stage.
    The answer is cached per model and input shape (:func:`structure_key`), as is
    :func:`final_linear`'s.
    """
    probe = _probe_input(model, x)

    return cached_per_model(_AUTO, model, probe, lambda: _last_spatial_layer(model, probe))


def _last_spatial_layer(model: nn.Module, probe: torch.Tensor) -> str:
    """The outermost module ending with the last spatial map after the last conv."""
    trace, _ = _trace_outputs(model, probe)
    # adaptive pooling only resamples (VGG's 7x7 pool): the feature map is before it
    trace = [(n, m, o) for n, m, o in trace if not isinstance(m, _RESAMPLING)]
    spatial = [(n, o) for n, _m, o in trace if o.dim() == 4 and o.shape[-1] * o.shape[-2] > 1]
    if not spatial:
        raise LayerError(f"{type(model).__name__} produces no spatial feature map; name a layer")
    last_shape = spatial[-1][1].shape
    # several nested modules can end with the same tensor: take the outermost
    # (it finishes last); skip non-conv leaf ops that come after the last conv.
    convs = [n for n, m, o in trace if isinstance(m, nn.Conv2d)]
    if not convs:
        raise LayerError(f"{type(model).__name__} has no nn.Conv2d layer; name a layer")
    last_conv_index = max(i for i, (n, m, _o) in enumerate(trace) if isinstance(m, nn.Conv2d))
    candidates = [
        n
        for i, (n, _m, o) in enumerate(trace)
        if i >= last_conv_index and o.dim() == 4 and o.shape == last_shape
    ]
    return candidates[-1] if candidates else convs[-1]


def suggest(model: nn.Module, x: torch.Tensor | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """Candidate CAM layers: ``(name, (C, H, W))`` of every module whose output is a
    spatial ``[N,C,H,W]`` map (``H*W > 1``), in the order they finish, one name per
    distinct map (the outermost module that returns it); the last one is
    :func:`auto_layer`'s usual answer. One forward on ``x[:1]`` or a zero 32x32 probe."""
    trace, _ = _trace_outputs(model, _probe_input(model, x))
    found: dict[tuple, tuple[str, tuple[int, ...]]] = {}
    channels_last = False  # between a Permute to [N,H,W,C] and back (ConvNeXt's blocks)
    for name, m, out in trace:
        dims = tuple(getattr(m, "dims", ()) or ())
        if dims in ((0, 2, 3, 1), (0, 3, 1, 2)):
            channels_last = dims == (0, 2, 3, 1)
        if channels_last or isinstance(m, (nn.Linear, *_RESAMPLING)):
            continue
        if out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1:
            key = (out.data_ptr(), tuple(out.shape), out._version)
            found.pop(key, None)  # the outer module finishes later: keep its name
            found[key] = (name, tuple(out.shape[1:]))
    return list(found.values())


def final_linear(model: nn.Module, x: torch.Tensor | None = None) -> tuple[str, nn.Linear]:
    """Name and module of the linear layer whose output is the model's logits.

    cnnlens' nets name it ``head``. For any other model the last ``nn.Linear``
    that runs is checked: its output must equal the model's output.
    """
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return "head", head
    probe = _probe_input(model, x)
    return cached_per_model(_FINAL, model, probe, lambda: _last_linear(model, probe))


def _last_linear(model: nn.Module, probe: torch.Tensor) -> tuple[str, nn.Linear]:
    trace, logits = _trace_outputs(model, probe)
    linears = [(n, m, o) for n, m, o in trace if isinstance(m, nn.Linear)]
    if not linears:
        raise LayerError(f"{type(model).__name__} has no nn.Linear layer to use as its final layer")
    name, module, out = linears[-1]
    if out.shape != logits.shape or not torch.allclose(out, logits):
        raise LayerError(
            f"the last linear layer {name!r} of {type(model).__name__} does not produce the "
            "logits (something runs after it); the final layer must be linear"
        )
    return name, module


def penultimate_features(
    model: nn.Module, x: torch.Tensor, head: str | None = None
) -> torch.Tensor:
    """The vector the final linear layer reads, ``[N,D]``, from one forward."""
    name = head or final_linear(model, x)[0]
    captured: list[torch.Tensor] = []
    handle = get_layer(model, name).register_forward_pre_hook(
        lambda _m, inp: captured.append(inp[0])
    )
    try:
        model(x)
    finally:
        handle.remove()
    return captured[-1].flatten(1)

"""Convolutions that apply the ReLU, or the residual addition and the ReLU, that
follow them as oneDNN post-ops, for forward-only passes on the CPU.

Every pointwise op after a convolution reads the convolution's output feature map
and writes another. oneDNN applies such ops while the convolution writes its
output ("post-ops", the kernels PyTorch's inductor compiler emits on the CPU:
``torch.ops.mkldnn._convolution_pointwise``), so ``relu(conv(x))`` and
``relu(conv(x) + r)`` become one call each and the feature map is written once.
The residual ``r`` is overwritten with the result where nothing reads it later
(the identity shortcut of a residual block), so no new feature map is allocated.

The rewrite works on a ``torch.fx`` trace of the model and is decided on one probe
forward: shapes, dtypes and which tensors share memory. A model fx cannot trace
(data-dependent control flow), or one without such a pattern, is left as it is.
The fused kernels have no gradient: for outputs computed without autograd only.

Measured with ``benchmarks/fast_copy.py`` on the 2-core Intel Xeon (2.6 GHz) this
project runs on: ResNet-20's forward (BatchNorm folded, channels-last; batch 32
and 64, 1 and 2 threads) took 0.75-0.79x the time of the unfused copy. VGG-11 and
LeNet-5, without residual additions, were unchanged within noise (+-4 %).

Kept after issue 18's comparison with ``torch.compile`` (inductor, the public path to
the same fusion; ``benchmarks/compile.py``, batch 32, 1 thread, on the shared 2-core
machine, load average 5-9): inductor's forward of the folded copy took 1.01x, 1.29x
and 1.06x the time of this module's on ResNet-20 in three runs (0.91x, 0.94x on
VGG-11), short of the issue's "within 5 % on both", and a cold compile took 20-40 s.
Long jobs can still choose it (``cnnlens run --compile on``).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}


def available() -> bool:
    """True where this torch build has oneDNN's fused convolution kernels."""
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_convolution_pointwise"
    )


class FusedConv2d(nn.Module):
    """``conv(x)``, then ``+ other`` if given, then ``relu`` if ``relu``: one oneDNN
    call. With ``overwrite`` the sum is written into ``other``. Shares ``conv``'s
    parameters; forward only (the kernels have no gradient)."""

    def __init__(self, conv: nn.Conv2d, relu: bool, add: bool, overwrite: bool) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        self.relu, self.add, self.overwrite = relu, add, overwrite

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        unary = "relu" if self.relu else None
        if not self.add:
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, *self.geometry, unary or "none", [], ""
            )
        kernel = torch.ops.mkldnn._convolution_pointwise
        if self.overwrite:
            kernel, x, other = torch.ops.mkldnn._convolution_pointwise_, other, x
        return kernel.binary(
            x, other, self.weight, self.bias, *self.geometry, "add", None, unary, [], ""
        )

    def extra_repr(self) -> str:
        post = ["add" + (" in place" if self.overwrite else "")] if self.add else []
        return ", ".join(post + (["relu"] if self.relu else []))


class _Probe(fx.Interpreter):
    """Runs the graph once, keeping each tensor node's shape, dtype and storage."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=False)  # no storage reused
        self.meta: dict[fx.Node, tuple[torch.Size, torch.dtype, int]] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.meta[n] = (out.shape, out.dtype, out.untyped_storage().data_ptr())
        return out


def fuse_pointwise(model: nn.Module, probe: torch.Tensor) -> tuple[nn.Module, int]:
    """A copy of ``model`` (eval mode, on the CPU) whose ``Conv2d``s apply the ReLU,
    or the addition and the ReLU, that follow them, and how many were fused;
    ``(model, 0)`` where nothing can be. The caller checks the copy's outputs."""
    if not available():
        return model, 0
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow, an untraceable op: left as it is
        return model, 0
    _drop_identities(gm)
    recorder = _Probe(gm)
    try:
        with torch.no_grad():
            traced, expected = recorder.run(probe), model(probe)
    except Exception:  # a trace that does not run as the model does
        return model, 0
    if not _close(traced, expected):  # e.g. `r += y` on an alias of r: fx traces it out of place
        return model, 0
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    fused = 0
    for node in list(gm.graph.nodes):
        conv = _plain_conv(gm, node)
        if conv is not None and node in recorder.meta and len(node.users) == 1:
            fused += _fuse(gm, node, conv, recorder.meta, order, fused)
    if not fused:
        return model, 0
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm, fused


def _close(got: object, expected: object) -> bool:
    if not (isinstance(got, torch.Tensor) and isinstance(expected, torch.Tensor)):
        return False
    scale = float(expected.abs().max().clamp_min(1)) if expected.numel() else 1.0
    return got.shape == expected.shape and torch.allclose(got, expected, 1e-5, 1e-6 * scale)


def _drop_identities(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and type(gm.get_submodule(node.target)) is nn.Identity:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)


def _plain_conv(gm: fx.GraphModule, node: fx.Node) -> nn.Conv2d | None:
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    conv = gm.get_submodule(node.target)
    plain = (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and conv.weight.dtype == torch.float32
        and conv.weight.device.type == "cpu"
    )
    return conv if plain else None


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _addend(node: fx.Node, conv_node: fx.Node) -> fx.Node | None:
    """The other operand if ``node`` adds it to ``conv_node`` (no ``alpha``, and not
    ``other.add_(conv)``, which changes ``other`` for every later reader)."""
    plain = node.op == "call_function" and node.target in _ADD_FUNCTIONS
    method = node.op == "call_method" and node.target in ("add", "add_")
    if not (plain or method) or len(node.args) != 2 or node.kwargs:
        return None
    a, b = node.args
    if a is conv_node and isinstance(b, fx.Node) and b is not conv_node:
        return b
    into_other = node.target in (operator.iadd, "add_")
    if b is conv_node and isinstance(a, fx.Node) and a is not conv_node and not into_other:
        return a
    return None


def _overwritable(other: fx.Node, at: fx.Node, meta: dict, order: dict[fx.Node, int]) -> bool:
    """Nothing reads ``other``'s memory after ``at``: it was made inside the graph
    (not an input or a parameter) and every node sharing its storage has its last
    reader at ``at`` or before."""
    storage = meta[other][2]
    for node, (_shape, _dtype, ptr) in meta.items():
        if ptr != storage:
            continue
        if node.op in ("placeholder", "get_attr"):
            return False
        if any(order[user] > order[at] for user in node.users):
            return False
    return other.op not in ("placeholder", "get_attr")


def _fuse(gm, node, conv, meta, order, index) -> int:
    (user,) = node.users
    if _is_relu(gm, user):
        other, overwrite, last = None, False, user
    else:
        other = _addend(user, node)
        if other is None or other not in meta or meta[other][:2] != meta[node][:2]:
            return 0
        after = list(user.users)
        last = after[0] if len(after) == 1 and _is_relu(gm, after[0]) else user
        # the convolution must not read the memory it writes to
        source = meta.get(node.args[0])
        reads_other = source is None or source[2] == meta[other][2]
        overwrite = not reads_other and _overwritable(other, last, meta, order)
    name = f"fused_conv_{index}"
    gm.add_submodule(name, FusedConv2d(conv, _is_relu(gm, last), other is not None, overwrite))
    with gm.graph.inserting_before(user):
        args = (node.args[0],) if other is None else (node.args[0], other)
        new = gm.graph.call_module(name, args)
    last.replace_all_uses_with(new)
    order[new] = order[user]
    storage = meta[other][2] if overwrite else meta[last][2]
    meta[new] = (*meta[last][:2], storage)
    for old in (last, user, node):
        if old in gm.graph.nodes and not old.users:
            gm.graph.erase_node(old)
    return 1

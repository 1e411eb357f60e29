"""Redirected ReLU gradients for activation maximisation (Lucid's ``redirected_relu_grad``).

A unit that is inactive everywhere on the starting image (a grey image often leaves
a channel after a ReLU at 0) has no gradient, and plain gradient ascent never moves
it. Olah et al.'s Lucid (``lucid/misc/redirected_relu_grad.py``, on by default in
``render_vis``) lets the gradient through an inactive ReLU where it pushes the
ReLU's input up, but only for an image whose ordinary ReLU gradient is zero
everywhere: once a unit is active, the gradient is the true one. The forward pass
is unchanged.

The rule goes on every ``nn.ReLU`` module through
:func:`cnnlens.attribution.modified_backward.modified_activations` (forward hooks,
removed on exit); a ReLU applied as a function keeps its ordinary gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ...attribution.modified_backward import modified_activations, with_copies_if_refused


class _RedirectedReLU(torch.autograd.Function):
    """Forward: the ReLU's output as computed; backward: the redirected gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        relu = grad * (x > 0)
        # ascent direction: block only where the input is negative and wants to go lower
        redirected = torch.where((x <= 0) & (grad < 0), torch.zeros_like(grad), grad)
        dead = relu.flatten(1).abs().amax(1) == 0
        return torch.where(dead.view(-1, *[1] * (grad.dim() - 1)), redirected, relu), None


def _redirect(_module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return _RedirectedReLU.apply(x, out)


def _select(module: nn.Module):
    return _redirect if isinstance(module, nn.ReLU) else None


@contextlib.contextmanager
def redirected_relus(model: nn.Module, probe: torch.Tensor) -> Iterator[None]:
    """Inside the block, every ``nn.ReLU`` of ``model`` passes redirected gradients.

    ``probe`` (one input) finds out with one forward and backward whether the model
    changes a ReLU's output in place, in which case the rule's outputs are copies.
    """

    def run(copy: bool) -> None:
        with modified_activations(model, _select, copy=copy), torch.enable_grad():
            v = probe[:1].detach().clone().requires_grad_(True)
            torch.autograd.grad(model(v).float().sum(), v)

    _, copy = with_copies_if_refused(run, False)
    with modified_activations(model, _select, copy=copy):
        yield

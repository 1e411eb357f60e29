"""The intentional attention-mask transformation g(M; n, beta) (paper 003, Eq. 11-13).

h(M; n) = (M/0.5)^n / 2 for M < 0.5 and 1 - ((1-M)/0.5)^n / 2 for M >= 0.5 is a tone curve
symmetric about (0.5, 0.5): n > 1 pushes mask values away from 0.5 (towards 0 and 1), n < 1
towards 0.5. g(M; n, beta) = (1 + beta) h(M; n) - beta then lowers the curve so values below
beta / (1 + beta) after h become negative (suppressed features are subtracted). At n = 1,
beta = 0, g is the identity. Used as y^k = f_b^k(g(M^k(f(x)); n, beta) * f(x)) (Eq. 13 with its
parentheses fixed: g acts on the mask, not on the features).
"""

from __future__ import annotations

import math

import torch

from ...errors import InputError


def check_parameters(n: float, beta: float) -> None:
    """n > 0 and 0 <= beta < 1, else an InputError naming the value."""
    if not (isinstance(n, int | float) and math.isfinite(n) and n > 0):
        raise InputError(f"the mask transformation needs n > 0, got n={n!r}")
    if not (isinstance(beta, int | float) and math.isfinite(beta) and 0 <= beta < 1):
        raise InputError(f"the mask transformation needs beta in [0, 1), got beta={beta!r}")


def tone_curve(mask: torch.Tensor, n: float) -> torch.Tensor:
    """h(M; n) of Eq. 12, symmetric about 0.5 (h(1 - M) = 1 - h(M)).

    Both branches in one: with s = 2M - 1, (M/0.5)^n / 2 = (1 - |s|)^n / 2 below 0.5 and
    1 - ((1-M)/0.5)^n / 2 = 1 - (1 - |s|)^n / 2 above, so h = 0.5 + sign(s) (1 - (1-|s|)^n) / 2.
    """
    s = (2 * mask - 1).clamp(-1, 1)
    return 0.5 + s.sign() * (1 - (1 - s.abs()).pow(n)) / 2


def mask_transform(mask: torch.Tensor, n: float, beta: float) -> torch.Tensor:
    """g(M; n, beta) = (1 + beta) h(M; n) - beta (Eq. 11); the identity at n=1, beta=0.

    Written as (1 - beta)/2 + (1 + beta)/2 sign(s) (1 - (1 - |s|)^n) with s = 2M - 1, in place
    on one new tensor: the masks are [N,K,C,H,W], so each pass over them costs about as much
    as a convolution here (half the time of the two-step form on the project's CPU).
    """
    check_parameters(n, beta)
    s = mask.mul(2).sub_(1).clamp_(-1, 1)
    sign = s.sign()
    p = s.abs_().neg_().add_(1)  # 1 - |s|
    p = p.mul_(p) if n == 2 else p.pow_(n)
    return p.neg_().add_(1).mul_(sign).mul_((1 + beta) / 2).add_((1 - beta) / 2)

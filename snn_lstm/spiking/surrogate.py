"""Spike functions: a Heaviside step forward, a surrogate derivative backward.

Forward, for every family:  H(u) = 1 if u > 0 else 0   (a tie u == 0 gives 0).
Backward, dH/du is replaced by a bump g_a(u) of width parameter a:

    gaussian          g(u) = exp(-u^2 / a) / sqrt(pi * a)        (the paper; a = 2 * variance)
    piecewise_linear  g(u) = max(0, 1 - |u| / a) / a             (Bellec et al. 2018)
    fast_sigmoid      g(u) = 1 / (1 + a * |u|)^2                 (SuperSpike, Zenke & Ganguli 2018)
    atan              g(u) = (a / 2) / (1 + (pi / 2 * a * u)^2)  (Fang et al. 2021)
    straight_through  g(u) = 1[|u| < a] / (2 * a)                (boxcar; a = 0.5 gives the classic 1)

All but fast_sigmoid integrate to 1 over u. The spiking LSTM uses one width for
the gates i, f, o (alpha1) and another for the candidate g (alpha2); each
family's default pair has the same half width at half maximum as the paper's
Gaussians (alpha1 = 4, alpha2 = 0.3), so switching family keeps the scale.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from snn_lstm.errors import UserError

Derivative = Callable[[Tensor, float], Tensor]


def gaussian(u: Tensor, a: float) -> Tensor:
    return torch.exp(-u * u / a) / math.sqrt(math.pi * a)


def piecewise_linear(u: Tensor, a: float) -> Tensor:
    return torch.clamp(1.0 - u.abs() / a, min=0.0) / a


def fast_sigmoid(u: Tensor, a: float) -> Tensor:
    return 1.0 / (1.0 + a * u.abs()) ** 2


def atan(u: Tensor, a: float) -> Tensor:
    return (a / 2.0) / (1.0 + (math.pi / 2.0 * a * u) ** 2)


def straight_through(u: Tensor, a: float) -> Tensor:
    return (u.abs() < a).to(u.dtype) / (2.0 * a)


DERIVATIVES: dict[str, Derivative] = {
    "gaussian": gaussian,
    "piecewise_linear": piecewise_linear,
    "fast_sigmoid": fast_sigmoid,
    "atan": atan,
    "straight_through": straight_through,
}
# The families by number, as the compiled kernels (C++ and Triton) know them.
FAMILY_IDS = {name: number for number, name in enumerate(DERIVATIVES)}


class _HeavisideWithSurrogate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, derivative: Derivative, width: float) -> Tensor:
        ctx.save_for_backward(u)
        ctx.derivative = derivative
        ctx.width = width
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_spike: Tensor):
        (u,) = ctx.saved_tensors
        return grad_spike * ctx.derivative(u, ctx.width), None, None


class Surrogate:
    """A spike function: ``spike(u)`` is H(u) forward and ``g_a(u)`` backward."""

    def __init__(self, name: str, width: float):
        if name not in DERIVATIVES:
            raise UserError(
                f"unknown surrogate '{name}': choose one of {', '.join(DERIVATIVES)}"
            )
        if not (math.isfinite(width) and width > 0):
            raise UserError(
                f"surrogate width must be a positive number, got {width} "
                f"(alpha1 and alpha2, model.alpha1 and model.alpha2 on the command line, must be > 0)"
            )
        self.name = name
        self.width = float(width)
        self._derivative = DERIVATIVES[name]

    def __call__(self, u: Tensor) -> Tensor:
        return _HeavisideWithSurrogate.apply(u, self._derivative, self.width)

    def derivative(self, u: Tensor) -> Tensor:
        """The surrogate g_a(u) itself, for hand-written backward passes and plots."""
        return self._derivative(u, self.width)

    def __repr__(self) -> str:
        return f"Surrogate({self.name!r}, width={self.width})"

"""The sine-mixture signal of the paper's section 4.2, generated (no download)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sine_mixture(x: Tensor) -> Tensor:
    """f(x) = 0.5 sin(3x) + 0.5 sin(6x) + 1, which lies in [0.12, 2]."""
    return 0.5 * torch.sin(3.0 * x) + 0.5 * torch.sin(6.0 * x) + 1.0


def sine_signals(n: int, seq_len: int, dt: float, generator: torch.Generator) -> Tensor:
    """f at x_t = phase + t * dt for t = 0..seq_len, a random phase per row: [n, seq_len + 1]."""
    phase = torch.rand(n, 1, generator=generator, dtype=torch.float64) * (2.0 * math.pi)
    x = phase + dt * torch.arange(seq_len + 1, dtype=torch.float64)
    return sine_mixture(x).float()

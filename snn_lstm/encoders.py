"""Turning real values into spikes, with random draws that can be replayed.

Every random draw comes from a generator seeded by (seed, stream, index), so a
training batch depends only on its step number: runs are reproducible and a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

TRAIN, VAL, TEST = 0, 1, 2


def make_generator(seed: int, stream: int, index: int = 0) -> torch.Generator:
    """A CPU generator for draw number `index` of `stream` under `seed`, well mixed."""
    state = np.random.SeedSequence([seed, stream, index]).generate_state(2, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def bernoulli_spikes(prob: Tensor, generator: torch.Generator) -> Tensor:
    """s = 1 with probability p, else 0 (p clipped to [0, 1]); same shape and dtype."""
    noise = torch.rand(prob.shape, generator=generator, dtype=prob.dtype)
    return (noise < prob.clamp(0.0, 1.0)).to(prob.dtype)

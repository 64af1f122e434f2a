"""Turning values in [0, 1] into network inputs, with draws that can be replayed.

    bernoulli   s = 1 with probability p, else 0 (rate coding; p clipped to [0, 1])
    identity    the values themselves (for the plain LSTM fed intensities, or inputs
                that are already spikes or must stay real, like word vectors)

Every random draw comes from a generator seeded by (seed, stream, index), so a
training batch depends only on its step number: runs are reproducible, a resumed
run sees exactly the batches an uninterrupted one would, and evaluation (seed 0,
its own stream) is the same for every run.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from snn_lstm.errors import UserError

# Streams: independent sequences of draws for each purpose.
TRAIN, VAL, TEST, TRAIN_ORDER, TRAIN_EVAL = 0, 1, 2, 3, 4
AUGMENT, MASK = 5, 6  # spoken digits: waveform copies (index: copy), feature masks (index: step)
SPLIT_STREAMS = {"train": TRAIN_EVAL, "val": VAL, "test": TEST}  # evaluation draws of each split


def make_generator(seed: int, stream: int, index: int = 0) -> torch.Generator:
    """A CPU generator for draw number `index` of `stream` under `seed`, well mixed."""
    if seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed}")
    state = np.random.SeedSequence([seed, stream, index]).generate_state(2, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def bernoulli_spikes(prob: Tensor, generator: torch.Generator) -> Tensor:
    """s = 1 with probability p, else 0 (p clipped to [0, 1]); same shape and dtype."""
    noise = torch.rand(prob.shape, generator=generator, dtype=prob.dtype)
    return (noise < prob.clamp(0.0, 1.0)).to(prob.dtype)


def identity(values: Tensor, generator: torch.Generator) -> Tensor:
    return values


ENCODERS = {"bernoulli": bernoulli_spikes, "identity": identity}


def build_encoder(name: str):
    if name not in ENCODERS:
        raise UserError(f"unknown encoder '{name}': choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name]

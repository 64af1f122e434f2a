"""What the training loop needs from a task: batches, a loss and metrics.

A task owns its dataset and encoder and knows how to judge a model on its
splits; the loop knows nothing about any particular experiment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


class Task:
    name: str
    input_size: int
    output_size: int
    readout: str  # "last" or "sequence", see snn_lstm.models
    monitor: str  # validation metric that picks best.pt
    monitor_mode: str  # "min" or "max"

    def train_batch(self, step: int, batch_size: int) -> tuple[Tensor, Tensor]:
        """Inputs [B, T, I] and targets for optimizer step `step` (deterministic in step)."""
        raise NotImplementedError

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        """Metrics of `model` on `split` ("val" or "test"), without a leading split name."""
        raise NotImplementedError

    def after_update(self, step: int, model: nn.Module) -> None:
        """Called with the model after `step` optimizer updates (also step 0)."""

    def write_figures(self, folder: Path) -> list[Path]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def is_better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value < best if self.monitor_mode == "min" else value > best

"""What the training loop needs from a task: batches, a loss and metrics.

A task owns its dataset and encoder and knows how to judge a model on its
splits; the loop knows nothing about any particular experiment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from snn_lstm.errors import UserError


class Task:
    name: str
    input_size: int
    output_size: int
    readout: str  # "last", "mean" or "sequence" (from task.readout), see snn_lstm.models
    monitor: str  # validation metric that picks best.pt
    monitor_mode: str  # "min" or "max"
    final_splits: tuple[str, ...] = ("test",)  # scored once training ends
    carries_state = False  # truncated BPTT: the recurrent state flows from one step's batch into the next
    presentations = 1  # the backbone's passes per evaluated example (the energy proxy counts each)

    def train_batch(self, step: int, batch_size: int) -> tuple[Tensor, Tensor]:
        """Inputs [B, T, I] and targets for optimizer step `step` (deterministic in step)."""
        raise NotImplementedError

    def check_batch_size(self, batch_size: int) -> None:
        """Fails before training when the training data cannot give batches of
        `batch_size`: the first batch is drawn once, which also tries its memory."""
        self.train_batch(0, batch_size)

    def starts_fresh(self, step: int, batch_size: int) -> bool:
        """For tasks that carry state: whether step `step` starts from a zero state."""
        return True

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def sample_inputs(self, count: int) -> Tensor:
        """`count` network inputs [B, T, I] to measure the model's activity on
        (firing rates, energy proxy): by default the first training batch."""
        return self.train_batch(0, count)[0]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        """Metrics of `model` on `split` ("val", "test" or one of final_splits), without a leading split name."""
        raise NotImplementedError

    def score(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        """evaluate() in evaluation mode (the model's mode is restored after), each
        name prefixed with the split: {"val/acc": ...}."""
        was_training = model.training
        model.eval()
        try:
            metrics = self.evaluate(model, split, device)
        finally:
            model.train(was_training)
        return {f"{split}/{name}": value for name, value in metrics.items()}

    def steps_for_epochs(self, epochs: float, batch_size: int) -> int:
        raise UserError(f"trainer.epochs needs a task with a fixed training set; {self.name} draws new data every step: set trainer.steps")

    def after_update(self, step: int, model: nn.Module) -> None:
        """Called with the model after `step` optimizer updates (also step 0)."""

    def write_artifacts(self, model: nn.Module, folder: Path) -> list[Path]:
        """Files worth keeping with the run (figures, samples), written under `folder`."""
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def is_better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value < best if self.monitor_mode == "min" else value > best

"""Sine prediction (paper section 4.2, Fig. 4).

Input: `channels` copies of p_t = f(x_t) / 2 through the encoder: with the
default Bernoulli encoder, spike trains each firing with probability p_t.
Target: f(x_{t+1}) at every step, read out linearly from h_t; loss MSE.
Baseline: predicting f(x_{t+1}) by the true f(x_t) (which the network never
sees, only its spikes); a useful model must beat that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snn_lstm.data.sine import sine_signals
from snn_lstm.encoders import TEST, TRAIN, VAL, make_generator
from snn_lstm.errors import UserError
from snn_lstm.tasks.base import Task

EVAL_BATCH = 256


class SineTask(Task):
    name = "sine"
    output_size = 1
    monitor = "mse"
    monitor_mode = "min"

    def __init__(self, cfg: dict[str, Any], encoder, seed: int, eval_limit: int | None, data_dir: str, cache_dir: str):
        for key in ("seq_len", "channels", "val_size", "test_size"):
            if cfg[key] <= 0:
                raise UserError(f"task.{key} must be a positive integer, got {cfg[key]}")
        if not cfg["dt"] > 0:
            raise UserError(f"task.dt must be positive, got {cfg['dt']}")
        self.cfg, self.seed, self.encoder = cfg, seed, encoder
        self.readout = cfg["readout"]
        self.input_size = cfg["channels"]
        self.split_sizes = {"val": cfg["val_size"], "test": cfg["test_size"]}
        if eval_limit is not None:
            self.split_sizes = {k: min(v, eval_limit) for k, v in self.split_sizes.items()}
        self.figure_steps = sorted(set(cfg["figure_steps"]))
        self.snapshots: dict[int, Tensor] = {}
        # Evaluation sets are fixed (seed 0) so every run is judged on the same signals.
        self._eval_signals = {
            split: sine_signals(size, cfg["seq_len"], cfg["dt"], make_generator(0, stream))
            for split, size, stream in (("val", self.split_sizes["val"], VAL), ("test", self.split_sizes["test"], TEST))
        }
        self._eval_spikes = {
            split: self.encode(signal, make_generator(0, stream, 1))
            for (split, signal), stream in zip(self._eval_signals.items(), (VAL, TEST))
        }

    def encode(self, signal: Tensor, generator: torch.Generator) -> Tensor:
        """[n, T + 1] signal -> [n, T, channels] encoded f(x_0..x_{T-1}) / 2."""
        prob = (signal[:, :-1] / 2.0).unsqueeze(-1).expand(-1, -1, self.input_size)
        return self.encoder(prob.contiguous(), generator)

    def train_batch(self, step: int, batch_size: int) -> tuple[Tensor, Tensor]:
        generator = make_generator(self.seed, TRAIN, step)
        signal = sine_signals(batch_size, self.cfg["seq_len"], self.cfg["dt"], generator)
        return self.encode(signal, generator), signal[:, 1:].unsqueeze(-1)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(output, target)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        signal, spikes = self._eval_signals[split], self._eval_spikes[split]
        squared_error = 0.0
        for start in range(0, len(signal), EVAL_BATCH):
            x = spikes[start : start + EVAL_BATCH].to(device)
            target = signal[start : start + EVAL_BATCH, 1:].unsqueeze(-1).to(device)
            output, _ = model(x)
            squared_error += F.mse_loss(output, target, reduction="sum").item()
        count = signal[:, 1:].numel()
        baseline = F.mse_loss(signal[:, :-1], signal[:, 1:], reduction="sum").item()
        return {"mse": squared_error / count, "baseline_mse": baseline / count}

    @torch.no_grad()
    def after_update(self, step: int, model: nn.Module) -> None:
        if step in self.figure_steps:
            was_training = model.training
            model.eval()
            x = self._eval_spikes["test"][:1].to(next(model.parameters()).device)
            self.snapshots[step] = model(x)[0][0, :, 0].cpu()
            model.train(was_training)

    def write_artifacts(self, model: nn.Module, folder: Path) -> list[Path]:
        if not self.snapshots:
            return []
        from snn_lstm.figures import plot_sine_predictions

        path = folder / "figures" / "sine_prediction.png"
        plot_sine_predictions(
            self._eval_signals["test"][0, 1:], self._eval_spikes["test"][0], self.snapshots, path
        )
        return [path]

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": dict(self.snapshots)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshots = dict(state.get("snapshots", {}))

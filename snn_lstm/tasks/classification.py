"""Classifying whole sequences: the batching and scoring shared by the image and
speech tasks.

A subclass fills `labels[split]` and serves `values(split, index)`: the inputs of
those examples as values in [0, 1], [n, T, I], before the encoder. Training batches
follow a fresh permutation of the training set every epoch, and the encoder draws
from a stream seeded by the step, so a batch depends only on (seed, step).

Evaluation may present each example `eval_draws` = K times (K independent spike
trains, as a longer rate-coded presentation would) and average the class
probabilities, p = (1/K) sum_k softmax(z_k); K = 1 (the default) is the paper's
protocol, a single draw. Loss cross-entropy; metric accuracy.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snn_lstm.encoders import SPLIT_STREAMS, TRAIN, TRAIN_ORDER, make_generator
from snn_lstm.errors import UserError
from snn_lstm.tasks.base import Task

EVAL_BATCH = 1000


class ClassificationTask(Task):
    monitor = "acc"
    monitor_mode = "max"
    labels: dict[str, Tensor]

    def __init__(self, cfg: dict[str, Any], encoder, seed: int):
        self.cfg, self.encoder, self.seed = cfg, encoder, seed
        self.readout = cfg["readout"]
        self.eval_draws = cfg.get("eval_draws", 1)  # checkpoints written before the option have none
        if self.eval_draws < 1:
            raise UserError(f"task.eval_draws must be at least 1, got {self.eval_draws}")

    def values(self, split: str, index: Tensor | slice) -> Tensor:
        """Inputs of examples `index` of `split` as values in [0, 1], [n, T, I]."""
        raise NotImplementedError

    @property
    def train_size(self) -> int:
        return len(self.labels["train"])

    def train_batch(self, step: int, batch_size: int) -> tuple[Tensor, Tensor]:
        per_epoch = self.train_size // batch_size
        if per_epoch == 0:
            raise UserError(f"trainer.batch_size {batch_size} exceeds the {self.train_size} training examples")
        epoch, position = divmod(step, per_epoch)
        order = torch.randperm(self.train_size, generator=make_generator(self.seed, TRAIN_ORDER, epoch))
        index = order[position * batch_size : (position + 1) * batch_size]
        inputs = self.encoder(self.values("train", index), make_generator(self.seed, TRAIN, step))
        return inputs, self.labels["train"][index]

    def sample_inputs(self, count: int) -> Tensor:
        """The first `count` test examples, encoded as in evaluation."""
        values = self.values("test", slice(0, count))
        return self.encoder(values, make_generator(0, SPLIT_STREAMS["test"], 0))  # the first test draw

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        labels = self.labels[split]
        correct, loss_sum = 0, 0.0
        for batch, start in enumerate(range(0, len(labels), EVAL_BATCH)):
            values = self.values(split, slice(start, start + EVAL_BATCH))
            y = labels[start : start + EVAL_BATCH].to(device)
            # log of the mean probability over the draws; draw 0 is the single-draw protocol
            log_probs = torch.stack([
                F.log_softmax(model(self.encoder(values, make_generator(draw, SPLIT_STREAMS[split], batch)).to(device))[0], -1)
                for draw in range(self.eval_draws)
            ]).logsumexp(0) - math.log(self.eval_draws)
            loss_sum += F.nll_loss(log_probs, y, reduction="sum").item()
            correct += (log_probs.argmax(-1) == y).sum().item()
        return {"acc": correct / len(labels), "loss": loss_sum / len(labels)}

    def steps_for_epochs(self, epochs: float, batch_size: int) -> int:
        return math.ceil(epochs * (self.train_size // batch_size))

"""Classifying whole sequences: the batching and scoring shared by the image and
speech tasks.

A subclass fills `labels[split]` and serves `values(split, index)`: the inputs of
those examples as values in [0, 1], [n, T, I], before the encoder. Training batches
follow a fresh permutation of the training set every epoch, and the encoder draws
from a stream seeded by the step, so a batch depends only on (seed, step).

Evaluation may present each example `eval_draws` = K times (K independent spike
trains, as a longer rate-coded presentation would) and average the class
probabilities, p = (1/K) sum_k softmax(z_k); K = 1 (the default) is the paper's
protocol, a single draw; with the identity encoder every draw would be the same,
so one is made (`presentations`: the backbone's passes per decision). Loss
cross-entropy; metric accuracy. With readout=sequence every step is trained on the
sequence's label, loss = (1/T) sum_t CE(z_t, y) (a per-step loss: the error reaches
every step directly), and the last step's logits z_T classify.

Distillation (`distill.teacher`: the checkpoint of a model trained on the same
data, for instance a plain LSTM reading the intensities themselves): the training
target of example n becomes the distribution

    q_n = (1 - w) one-hot(y_n) + w softmax(z_n / T)

with z_n the teacher's logits for example n (computed once, on draw 0 of the
teacher's own encoder), and the loss is the cross-entropy -sum_c q_nc log p_nc (so
a distilled run's train/loss is not comparable with a label-only run's).
Evaluation still scores the labels alone.
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snn_lstm.checkpoint import load_checkpoint, reading
from snn_lstm.encoders import SPLIT_STREAMS, TRAIN, TRAIN_ORDER, build_encoder, identity, make_generator
from snn_lstm.errors import UserError
from snn_lstm.models import model_from_checkpoint
from snn_lstm.tasks.base import Task

EVAL_BATCH = 1000
TEACHER_BATCH = 2000  # as in the recorded distilled runs: the batch size moves the last bits of the logits
# Task settings that do not change which examples a model sees (a teacher may differ in them).
MODEL_SETTINGS = ("readout", "hidden_size", "eval_draws", "distill")


def class_logits(output: Tensor) -> Tensor:
    """[B, C] class scores of a model's output: readout=sequence ([B, T, C]) classifies on its last step."""
    return output[:, -1] if output.dim() == 3 else output


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
        self.presentations = 1 if encoder is identity else self.eval_draws  # identical draws need one pass
        self.distill = cfg.get("distill") or {"teacher": None}  # checkpoints written before the option have none
        if self.distill["teacher"] is not None:
            if not 0.0 <= self.distill["weight"] <= 1.0:
                raise UserError(f"task.distill.weight must lie in [0, 1], got {self.distill['weight']}")
            if not self.distill["temperature"] > 0:
                raise UserError(f"task.distill.temperature must be positive, got {self.distill['temperature']}")

    def values(self, split: str, index: Tensor | slice) -> Tensor:
        """Inputs of examples `index` of `split` as values in [0, 1], [n, T, I]."""
        raise NotImplementedError

    def train_values(self, step: int, index: Tensor) -> Tensor:
        """The values training step `step` feeds for training examples `index`
        (a task that augments its data changes them here)."""
        return self.values("train", index)

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
        inputs = self.encoder(self.train_values(step, index), make_generator(self.seed, TRAIN, step))
        labels = self.labels["train"][index]
        if self.distill["teacher"] is None:
            return inputs, labels
        weight = self.distill["weight"]
        return inputs, (1 - weight) * F.one_hot(labels, self.output_size).float() + weight * self.teacher_probabilities[index]

    @cached_property
    def teacher_probabilities(self) -> Tensor:
        """softmax(z / T) of the distillation teacher for every training example, [N, C]."""
        path = Path(self.distill["teacher"])
        if not path.is_file():
            raise UserError(f"task.distill.teacher: no checkpoint at {path}: train the teacher first "
                            "(for Table 1: snnlstm train experiment=paper/table1/teacher) or set task.distill.teacher=null")
        checkpoint = load_checkpoint(path)
        with reading(path):
            return self._teacher_probabilities(checkpoint, path)

    def _teacher_probabilities(self, checkpoint: dict[str, Any], path: Path) -> Tensor:
        theirs = checkpoint["config"]["task"]
        differing = [f"{key}={theirs.get(key)} (here {value})" for key, value in self.cfg.items()
                     if key not in MODEL_SETTINGS and theirs.get(key) != value]
        if differing or checkpoint["model_args"]["output_size"] != self.output_size:
            raise UserError(f"task.distill.teacher {path} was trained on other data ({', '.join(differing) or 'other classes'}): "
                            "train the teacher with this task's settings")
        with torch.random.fork_rng(devices=[]):  # building the teacher must not move the run's random stream
            teacher = model_from_checkpoint(checkpoint, f"task.distill.teacher {path}")
        teacher.eval()
        encoder = build_encoder(checkpoint["config"]["encoder"]["name"])
        with torch.no_grad():
            logits = [class_logits(teacher(encoder(self.values("train", slice(start, start + TEACHER_BATCH)),
                                                   make_generator(0, SPLIT_STREAMS["train"], batch)))[0])
                      for batch, start in enumerate(range(0, self.train_size, TEACHER_BATCH))]
        return F.softmax(torch.cat(logits) / self.distill["temperature"], -1)

    def sample_inputs(self, count: int) -> Tensor:
        """The first `count` test examples, encoded as in evaluation."""
        values = self.values("test", slice(0, count))
        return self.encoder(values, make_generator(0, SPLIT_STREAMS["test"], 0))  # the first test draw

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        if output.dim() == 3:  # readout=sequence: [B, T, C], each step scored on the sequence's target
            target = target.unsqueeze(1).expand(-1, output.shape[1], *target.shape[1:])
            return F.cross_entropy(output.flatten(0, 1), target.flatten(0, 1))
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
                F.log_softmax(class_logits(model(self.encoder(values, make_generator(draw, SPLIT_STREAMS[split], batch))
                                                 .to(device))[0]), -1)
                for draw in range(self.presentations)
            ]).logsumexp(0) - math.log(self.presentations)
            loss_sum += F.nll_loss(log_probs, y, reduction="sum").item()
            correct += (log_probs.argmax(-1) == y).sum().item()
        return {"acc": correct / len(labels), "loss": loss_sum / len(labels)}

    def steps_for_epochs(self, epochs: float, batch_size: int) -> int:
        return math.ceil(epochs * (self.train_size // batch_size))

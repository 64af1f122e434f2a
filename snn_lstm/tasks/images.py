"""Images read as sequences (paper section 4.3, Tables 1 and 2, and beyond).

Layouts of an H x W image with intensities p = pixel / 255:
    rows             H steps of W inputs (sequential MNIST: 28 x 28)
    pixels           H*W steps of 1 input (pixel MNIST: 784 x 1)
    permuted_pixels  as pixels, in a fixed random order drawn from permutation_seed
The encoder turns p into the network input (Bernoulli spikes by default, redrawn on
every training pass, drawn with a fixed seed for evaluation). Readout: softmax over
the classes on h_T; loss cross-entropy; metric accuracy.

Evaluation may present each image `eval_draws` = K times (K independent spike
trains, as a longer rate-coded presentation would) and average the class
probabilities, p = (1/K) sum_k softmax(z_k); K = 1 (the default) is the paper's
protocol, a single draw.

The last `val_size` training images are held out for validation (best.pt is chosen
on them, never on the test set).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snn_lstm.data.idx import MNIST, emnist, generic, load_split
from snn_lstm.encoders import SPLIT_STREAMS, TRAIN, TRAIN_ORDER, make_generator
from snn_lstm.errors import UserError
from snn_lstm.tasks.base import Task

LAYOUTS = ("rows", "pixels", "permuted_pixels")
EVAL_BATCH = 1000


class SequentialImageTask(Task):
    monitor = "acc"
    monitor_mode = "max"

    def __init__(self, cfg: dict[str, Any], encoder, seed: int, eval_limit: int | None, data_dir: str, cache_dir: str):
        if cfg["layout"] not in LAYOUTS:
            raise UserError(f"task.layout must be one of {', '.join(LAYOUTS)}, got '{cfg['layout']}'")
        self.cfg, self.encoder, self.seed = cfg, encoder, seed
        self.readout = cfg["readout"]
        self.eval_draws = cfg.get("eval_draws", 1)  # checkpoints written before the option have none
        if self.eval_draws < 1:
            raise UserError(f"task.eval_draws must be at least 1, got {self.eval_draws}")
        source = {"mnist": lambda: MNIST, "emnist": lambda: emnist(cfg["emnist_split"]),
                  "idx": lambda: generic(cfg["folder"] or "")}.get(cfg["dataset"])
        if source is None:
            raise UserError(f"task.dataset must be mnist, emnist or idx, got '{cfg['dataset']}'")
        if cfg["dataset"] == "idx" and not cfg["folder"]:
            raise UserError("task.dataset=idx needs task.folder: the folder under paths.data_dir with the IDX files")
        train_images, train_labels = load_split(source(), data_dir, "train")
        test_images, test_labels = load_split(source(), data_dir, "test")
        val_size = cfg["val_size"]
        if not 0 < val_size < len(train_images):
            raise UserError(f"task.val_size must lie between 1 and {len(train_images) - 1}, got {val_size}")
        cut = len(train_images) - val_size
        self.images = {
            "train": torch.from_numpy(train_images[:cut]),
            "val": torch.from_numpy(train_images[cut:]),
            "test": torch.from_numpy(test_images),
        }
        self.labels = {
            "train": torch.from_numpy(train_labels[:cut]),
            "val": torch.from_numpy(train_labels[cut:]),
            "test": torch.from_numpy(test_labels),
        }
        if eval_limit is not None:
            for split in ("val", "test"):
                self.images[split] = self.images[split][:eval_limit]
                self.labels[split] = self.labels[split][:eval_limit]
        self.output_size = int(max(train_labels.max(), test_labels.max())) + 1
        height, width = train_images.shape[1:]
        self.input_size = width if cfg["layout"] == "rows" else 1
        self.permutation = None
        if cfg["layout"] == "permuted_pixels":
            generator = torch.Generator().manual_seed(cfg["permutation_seed"])
            self.permutation = torch.randperm(height * width, generator=generator)

    @property
    def train_size(self) -> int:
        return len(self.labels["train"])

    def sequences(self, images: Tensor) -> Tensor:
        """uint8 [n, H, W] -> intensities [n, T, I] in the task's layout."""
        values = images.float().div_(255.0)
        if self.cfg["layout"] == "rows":
            return values
        values = values.reshape(len(values), -1, 1)
        return values[:, self.permutation] if self.permutation is not None else values

    def train_batch(self, step: int, batch_size: int) -> tuple[Tensor, Tensor]:
        per_epoch = self.train_size // batch_size
        if per_epoch == 0:
            raise UserError(f"trainer.batch_size {batch_size} exceeds the {self.train_size} training images")
        epoch, position = divmod(step, per_epoch)
        order = torch.randperm(self.train_size, generator=make_generator(self.seed, TRAIN_ORDER, epoch))
        index = order[position * batch_size : (position + 1) * batch_size]
        inputs = self.encoder(self.sequences(self.images["train"][index]), make_generator(self.seed, TRAIN, step))
        return inputs, self.labels["train"][index]

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        images, labels = self.images[split], self.labels[split]
        correct, loss_sum = 0, 0.0
        for batch, start in enumerate(range(0, len(labels), EVAL_BATCH)):
            sequences = self.sequences(images[start : start + EVAL_BATCH])
            y = labels[start : start + EVAL_BATCH].to(device)
            # log of the mean probability over the draws; draw 0 is the single-draw protocol
            log_probs = torch.stack([
                F.log_softmax(model(self.encoder(sequences, make_generator(draw, SPLIT_STREAMS[split], batch)).to(device))[0], -1)
                for draw in range(self.eval_draws)
            ]).logsumexp(0) - math.log(self.eval_draws)
            loss_sum += F.nll_loss(log_probs, y, reduction="sum").item()
            correct += (log_probs.argmax(-1) == y).sum().item()
        return {"acc": correct / len(labels), "loss": loss_sum / len(labels)}

    def steps_for_epochs(self, epochs: float, batch_size: int) -> int:
        return math.ceil(epochs * (self.train_size // batch_size))

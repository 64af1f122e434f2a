"""Images read as sequences (paper section 4.3, Tables 1 and 2, and beyond).

Layouts of an H x W image with intensities p = pixel / 255:
    rows             H steps of W inputs (sequential MNIST: 28 x 28)
    pixels           H*W steps of 1 input (pixel MNIST: 784 x 1)
    permuted_pixels  as pixels, in a fixed random order drawn from permutation_seed
With `pixels_per_step` = k (pixel layouts), k consecutive pixels of that order make
one step: H*W/k steps of k inputs (196 x 4 for MNIST at k = 4, a shorter-memory control).
The encoder turns p into the network input (Bernoulli spikes by default, redrawn on
every training pass, drawn with a fixed seed for evaluation). Readout: softmax over
the classes on h_T (task.readout); batching, loss and scoring (also `eval_draws`) in
snn_lstm.tasks.classification.

The last `val_size` training images are held out for validation (best.pt is chosen
on them, never on the test set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from snn_lstm.data.idx import MNIST, emnist, generic, load_split
from snn_lstm.errors import UserError
from snn_lstm.tasks.classification import ClassificationTask

LAYOUTS = ("rows", "pixels", "permuted_pixels")
DATASETS = ("mnist", "emnist", "idx")


class SequentialImageTask(ClassificationTask):
    def __init__(self, cfg: dict[str, Any], encoder, seed: int, eval_limit: int | None, data_dir: str, cache_dir: str):
        if cfg["layout"] not in LAYOUTS:
            raise UserError(f"task.layout must be one of {', '.join(LAYOUTS)}, got '{cfg['layout']}'")
        super().__init__(cfg, encoder, seed)
        source = {"mnist": lambda: MNIST, "emnist": lambda: emnist(cfg["emnist_split"]),
                  "idx": lambda: generic(cfg["folder"] or "")}.get(cfg["dataset"])
        if source is None:
            raise UserError(f"task.dataset must be mnist, emnist or idx, got '{cfg['dataset']}'")
        if cfg["dataset"] == "idx" and not cfg["folder"]:
            raise UserError("task.dataset=idx needs task.folder: the folder under paths.data_dir with the IDX files")
        train_images, train_labels = load_split(source(), data_dir, "train")
        test_images, test_labels = load_split(source(), data_dir, "test")
        folder = Path(data_dir) / source().name
        if train_images.shape[1:] != test_images.shape[1:]:
            raise UserError(f"{folder}: the training images are {'x'.join(map(str, train_images.shape[1:]))} but the test "
                            f"images {'x'.join(map(str, test_images.shape[1:]))}: both splits must be of one size")
        for split, labels in (("training", train_labels), ("test", test_labels)):
            if len(labels) == 0:
                raise UserError(f"{folder}: the {split} split holds no images: replace its IDX files")
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
        per_step = cfg.get("pixels_per_step", 1)  # checkpoints written before the option have none
        if per_step != 1 and cfg["layout"] == "rows":
            raise UserError(f"task.pixels_per_step={per_step} applies to the pixel layouts: set task.layout=pixels "
                            "or permuted_pixels, or task.pixels_per_step=1")
        if per_step < 1 or (height * width) % per_step:
            raise UserError(f"task.pixels_per_step must divide the {height * width} pixels of an image, got {per_step}")
        self.input_size = width if cfg["layout"] == "rows" else per_step
        self.permutation = None
        if cfg["layout"] == "permuted_pixels":
            generator = torch.Generator().manual_seed(cfg["permutation_seed"])
            self.permutation = torch.randperm(height * width, generator=generator)

    def sequences(self, images: Tensor) -> Tensor:
        """uint8 [n, H, W] -> intensities [n, T, I] in the task's layout."""
        values = images.float().div_(255.0)
        if self.cfg["layout"] == "rows":
            return values
        values = values.reshape(len(values), -1)
        if self.permutation is not None:
            values = values[:, self.permutation]
        return values.reshape(len(values), -1, self.input_size)

    def values(self, split: str, index: Tensor | slice) -> Tensor:
        return self.sequences(self.images[split][index])

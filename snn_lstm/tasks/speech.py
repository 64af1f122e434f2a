"""Spoken digits (paper section 4.5): FSDD recordings through an audio front end,
classified from the network's last output.

Splits (FSDD's official one): recordings with index 0-4 are the test set; the
training indices 5-49 are cut at `val_from_index`: [5, val_from_index) train,
[val_from_index, 50) validation (picks best.pt). `speakers` restricts train and
validation (and test, unless `test_speakers` names others, e.g. unseen speakers).

Layouts of the front end's features F [frames, C]:
    averaged  the paper's: the time average mean_t F[t] (C = 336 scattering
              coefficients) cut into `steps` steps of C / steps values (8 x 42)
    frames    the front end's frames as steps: [frames, C]
Each coefficient is scaled with its minimum and maximum over the training
recordings only,
    v = clip((x - min_train) / (max_train - min_train), 0, 1),
so the values can be rate-coded (encoder=bernoulli) or fed as they are
(encoder=identity). The rate codes stay sparse (mean firing about 0.2); a
standardised code, sigmoid((x - mean) / std), fires at 0.5 on every input and left
the spiking LSTM silent (chance accuracy) with 336 inputs per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from snn_lstm.data.frontends import cached_features
from snn_lstm.data.fsdd import SAMPLE_RATE, TEST_INDICES, Recording, list_recordings, read_wav, recordings_folder
from snn_lstm.errors import UserError
from snn_lstm.tasks.classification import ClassificationTask

LAYOUTS = ("averaged", "frames")
NUM_INDICES = 50


class SpokenDigitTask(ClassificationTask):
    final_splits = ("train", "test")

    def __init__(self, cfg: dict[str, Any], encoder, seed: int, eval_limit: int | None, data_dir: str, cache_dir: str):
        if cfg["layout"] not in LAYOUTS:
            raise UserError(f"task.layout must be one of {', '.join(LAYOUTS)}, got '{cfg['layout']}'")
        if not TEST_INDICES.stop < cfg["val_from_index"] < NUM_INDICES:
            raise UserError(f"task.val_from_index must lie in 6..49 (training indices are 5-49), got {cfg['val_from_index']}")
        if cfg["num_samples"] <= 0:
            raise UserError(f"task.num_samples must be a positive integer, got {cfg['num_samples']}")
        if cfg.get("frontend") is None:
            raise UserError("the fsdd task needs a front end: add task/frontend=scattering, mfcc or logmel")
        super().__init__(cfg, encoder, seed)
        speakers = list(cfg["speakers"] or [])
        test_speakers = list(cfg["test_speakers"] or speakers)
        recordings = list_recordings(recordings_folder(data_dir), sorted(set(speakers + test_speakers)) or None)
        features = torch.from_numpy(cached_features(
            dict(cfg["frontend"]), [r.path for r in recordings], read_wav, SAMPLE_RATE, cfg["num_samples"], Path(cache_dir)
        ))
        if cfg["layout"] == "averaged":
            features = features.mean(1)
            steps, size = cfg["steps"], features.shape[1]
            if steps <= 0 or size % steps:
                raise UserError(f"task.steps must divide the front end's {size} coefficients, got {steps}")
            features = features.reshape(len(features), steps, size // steps)

        def split_of(recording: Recording) -> str:
            return "val" if recording.split == "train" and recording.index >= cfg["val_from_index"] else recording.split

        def chosen(split: str, allowed: list[str]) -> list[int]:
            return [k for k, r in enumerate(recordings) if split_of(r) == split and (not allowed or r.speaker in allowed)]

        rows = {"train": chosen("train", speakers), "val": chosen("val", speakers), "test": chosen("test", test_speakers)}
        for split, index in rows.items():
            if not index:
                raise UserError(f"the fsdd {split} split is empty: check task.speakers / task.test_speakers")
        if eval_limit is not None:
            rows["val"], rows["test"] = rows["val"][:eval_limit], rows["test"][:eval_limit]
        self.recordings = {split: [recordings[k].path.name for k in index] for split, index in rows.items()}
        self.labels = {split: torch.tensor([recordings[k].digit for k in index]) for split, index in rows.items()}
        train = features[rows["train"]].flatten(0, -2)
        low, high = train.min(0).values, train.max(0).values
        scale = torch.where(high > low, high - low, torch.ones_like(high))
        self.inputs = {split: ((features[index] - low) / scale).clamp_(0.0, 1.0) for split, index in rows.items()}
        self.input_size = self.inputs["train"].shape[-1]
        self.output_size = 10

    def values(self, split: str, index: Tensor | slice) -> Tensor:
        return self.inputs[split][index]

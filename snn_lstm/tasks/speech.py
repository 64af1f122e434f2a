"""Spoken digits (paper section 4.5): FSDD recordings through an audio front end,
classified from the network's output.

Splits. Official (FSDD's own): recordings with index 0-4 are the test set; the
training indices 5-49 are cut at `val_from_index`: [5, val_from_index) train,
[val_from_index, 50) validation (picks best.pt). `speakers` restricts train and
validation (and test, unless `test_speakers` names others). Leave one speaker out
(`held_out_speaker`): all 50 x 10 recordings of that speaker are the test set, the
other speakers' index [0, val_from_index) trains and the rest validates, so the test
voice is never heard in training.

Layouts of the front end's features F [frames, C]:
    averaged  the paper's: the time average mean_t F[t] (C = 336 scattering
              coefficients) cut into `steps` steps of C / steps values (8 x 42)
    frames    the front end's frames as steps: [frames, C]
With frames, `stretch` first interpolates the frames that hold the recording (not
its zero padding) to all T steps (stretched()), and `normalise` takes each
recording on its own (cepstral mean and variance normalisation, over its T frames):
    cmn   F[t] - mean_t F        (removes a fixed channel or gain, a log offset)
    cmvn  (F[t] - mean_t F) / max(std_t F, 1e-3)
    speaker_cmvn  the same with the mean and deviation over all the (unpadded)
          frames of all recordings of the recording's speaker, as speaker-level
          CMVN in speech recognition: it removes the speaker's and microphone's
          average spectrum but keeps each word's own; it needs a batch of
          unlabelled recordings of a new speaker (in leave-one-speaker-out, the
          held-out speaker's test recordings, labels unused)
    speaker_heq   histogram equalisation per speaker: each coefficient x becomes
          Phi^-1(F_s(x)), F_s the empirical distribution of that coefficient over
          the speaker's (unpadded) frames (mid-rank, (rank + 1/2) / n), Phi the
          standard normal's: every speaker's coefficients then follow N(0, 1) in
          all their moments, where speaker_cmvn matches only the first two (the
          same unlabelled recordings of a new speaker are needed)
`deltas` = 1 or 2 then appends the time derivatives of those frames (C more
coefficients each), the regression estimate of speech recognition's front ends over
+-2 frames (edges repeated),
    d[t] = sum_{n=1..2} n (F[t+n] - F[t-n]) / (2 sum_{n=1..2} n^2) = sum_n n (F[t+n] - F[t-n]) / 10
and for 2 the same of d (the acceleration): the spectrum's movement, which a
constant offset of a speaker's or microphone's coefficients does not change.
Then each coefficient is scaled with statistics of the training recordings only
(`scaling`), so the values can be rate-coded (encoder=bernoulli) or fed as they
are (encoder=identity):
    minmax  v = clip((x - min_train) / (max_train - min_train), 0, 1)
    on_off  z = (x - mean_train) / (2 std_train), two inputs per coefficient,
            v = [clip(z, 0, 1), clip(-z, 0, 1)] (ON and OFF polarities, as an
            event camera's): a centred feature stays a sparse code
Min-max codes of raw features stay sparse (mean firing about 0.2, mostly from the
silent padding); a standardised code, sigmoid((x - mean) / std), fires at 0.5 on
every input and left the spiking LSTM silent (chance accuracy) with 336 inputs per
step, as did min-max codes of per-recording normalised features (mean 0.53).

`augment` (snn_lstm.data.augment) changes the training examples only: augmented
copies of the waveforms (speed, tempo, pitch, noise; each step draws for every example the
clean recording or one of its copies) and masks over the scaled features.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor

from snn_lstm.data.augment import WaveAugmentation, check_augment, mask_features, masks_features
from snn_lstm.data.frontends import cached_features
from snn_lstm.data.fsdd import SAMPLE_RATE, TEST_INDICES, Recording, list_recordings, read_wav, recordings_folder
from snn_lstm.encoders import MASK, make_generator
from snn_lstm.errors import UserError
from snn_lstm.tasks.classification import ClassificationTask

LAYOUTS = ("averaged", "frames")
NORMALISATIONS = ("none", "cmn", "cmvn", "speaker_cmvn", "speaker_heq")
SCALINGS = ("minmax", "on_off")
ON_OFF_RANGE = 2.0  # standard deviations to full rate: a typical |z| of 0.8 fires about 0.4 of the time on its polarity
NUM_INDICES = 50
MAX_DELTAS = 2
DELTA_WINDOW = 5  # frames t-2 .. t+2
CMVN_FLOOR = 1e-3  # a coefficient constant over a recording is centred, not blown up
NO_AUGMENT = {"copies": 0, "speeds": [1.0], "tempos": [1.0], "pitch_steps": [0.0], "snr_db": None,
              "time_masks": 0, "time_mask_width": 0, "freq_masks": 0, "freq_mask_width": 0}


def stretched(features: Tensor, samples: Tensor, num_samples: int) -> Tensor:
    """Each recording's own frames, those before its zero padding (v = ceil(frames *
    samples / num_samples), at least 2), linearly interpolated to all `frames` steps:
    every word then spans the whole sequence, however fast it was spoken."""
    frames = features.shape[1]
    voiced = (samples.long() * frames + num_samples - 1).div(num_samples, rounding_mode="floor").clamp(2, frames)
    out = torch.empty_like(features)
    for count in voiced.unique().tolist():
        rows = (voiced == count).nonzero()[:, 0]
        own = features[rows, :count].transpose(1, 2)  # [n, C, count]
        out[rows] = F.interpolate(own, size=frames, mode="linear", align_corners=True).transpose(1, 2)
    return out


def equalised(features: Tensor, reference: Tensor) -> Tensor:
    """Phi^-1 of each value's mid-rank among the reference frames [n, C] of its
    coefficient: features [..., C] mapped so that the reference follows N(0, 1)."""
    ordered = reference.T.sort(-1).values.contiguous()  # [C, n]
    values = features.reshape(-1, features.shape[-1]).T.contiguous()  # [C, m]
    below = torch.searchsorted(ordered, values, side="left")
    not_above = torch.searchsorted(ordered, values, side="right")
    n = ordered.shape[-1]
    # ties share their mid-rank; a value outside the reference's range sits half a rank beyond it
    share = ((below + not_above).double() / 2).clamp(0.5, n - 0.5) / n
    normal = torch.distributions.Normal(0.0, 1.0)
    return normal.icdf(share).to(features.dtype).T.reshape(features.shape)


def with_deltas(features: Tensor, order: int) -> Tensor:
    """features [n, T, C] followed by their first `order` time derivatives: [n, T, C (1 + order)]."""
    stack = [features]
    for _ in range(order):
        stack.append(AF.compute_deltas(stack[-1].transpose(1, 2), win_length=DELTA_WINDOW).transpose(1, 2))
    return torch.cat(stack, -1)


def check_settings(cfg: dict[str, Any]) -> None:
    """The task's settings (also those of a checkpoint, which no schema checked)."""
    for name, allowed, default in (("layout", LAYOUTS, None), ("normalise", NORMALISATIONS, "none"), ("scaling", SCALINGS, "minmax")):
        if cfg.get(name, default) not in allowed:
            raise UserError(f"task.{name} must be one of {', '.join(allowed)}, got '{cfg[name]}'")
    if not TEST_INDICES.stop < cfg["val_from_index"] < NUM_INDICES:
        raise UserError(f"task.val_from_index must lie in 6..49 (training indices are 5-49), got {cfg['val_from_index']}")
    if cfg["num_samples"] <= 0:
        raise UserError(f"task.num_samples must be a positive integer, got {cfg['num_samples']}")
    if cfg.get("frontend") is None:
        raise UserError("the fsdd task needs a front end: add task/frontend=scattering, mfcc or logmel")
    if cfg.get("deltas", 0) not in range(MAX_DELTAS + 1):
        raise UserError(f"task.deltas must be 0, 1 (first derivatives) or 2 (and second), got {cfg['deltas']}")
    for name, value in (("normalise", cfg.get("normalise", "none") != "none"), ("stretch", cfg.get("stretch")),
                        ("deltas", cfg.get("deltas", 0) > 0)):
        if value and cfg["layout"] != "frames":
            raise UserError(f"task.{name}={str(cfg[name]).lower()} works on a recording's frames: set task.layout=frames")


class SpokenDigitTask(ClassificationTask):
    final_splits = ("train", "test")

    def __init__(self, cfg: dict[str, Any], encoder, seed: int, eval_limit: int | None, data_dir: str, cache_dir: str):
        check_settings(cfg)
        # checkpoints written before these options have none of them
        self.normalise, self.scaling = cfg.get("normalise", "none"), cfg.get("scaling", "minmax")
        self.augment = cfg.get("augment") or NO_AUGMENT
        check_augment(self.augment)
        super().__init__(cfg, encoder, seed)
        recordings, rows = self.choose_recordings(cfg, data_dir)
        if eval_limit is not None:
            rows["val"], rows["test"] = rows["val"][:eval_limit], rows["test"][:eval_limit]
        self.recordings = {split: [recordings[k].path.name for k in index] for split, index in rows.items()}
        self.labels = {split: torch.tensor([recordings[k].digit for k in index]) for split, index in rows.items()}

        def features_of(paths: list, augmentation: WaveAugmentation | None = None) -> Tensor:
            features, samples = cached_features(
                dict(cfg["frontend"]), paths, read_wav, SAMPLE_RATE, cfg["num_samples"], Path(cache_dir), augmentation)
            return self.arrange(torch.from_numpy(features), torch.from_numpy(samples), [r.speaker for r in recordings])

        paths = [r.path for r in recordings]
        features = features_of(paths)
        train = features[rows["train"]].flatten(0, -2)
        if self.scaling == "minmax":
            self.low, high = train.min(0).values, train.max(0).values
            self.scale = torch.where(high > self.low, high - self.low, torch.ones_like(high))
        else:  # on_off: standardised, then +-ON_OFF_RANGE standard deviations span each polarity
            self.low, spread = train.mean(0), train.std(0)
            self.scale = torch.where(spread > 0, spread, torch.ones_like(spread)) * ON_OFF_RANGE
        self.inputs = {split: self.scaled(features[index]) for split, index in rows.items()}
        self.augmented_train = lambda copy: self.scaled(
            features_of(paths, WaveAugmentation(self.augment, seed, copy, len(paths), SAMPLE_RATE))[rows["train"]])
        self.input_size = self.inputs["train"].shape[-1]
        self.output_size = 10

    def choose_recordings(self, cfg: dict[str, Any], data_dir: str) -> tuple[list[Recording], dict[str, list[int]]]:
        """The recordings to read and the rows of each split among them.

        Official split: index 0-4 test, [5, val_from_index) train, the rest
        validation. Leave one speaker out (`held_out_speaker`): every recording of
        that speaker is the test set; the other speakers' index [0, val_from_index)
        train and the rest validation."""
        speakers = list(cfg["speakers"] or [])
        held_out = cfg.get("held_out_speaker")
        if held_out is not None:
            if cfg["test_speakers"]:
                raise UserError("task.held_out_speaker already chooses the test speaker: set task.test_speakers=null")
            if held_out not in speakers:
                raise UserError(f"task.held_out_speaker '{held_out}' is not one of task.speakers ({', '.join(speakers)})")
            speakers = [s for s in speakers if s != held_out]
        test_speakers = [held_out] if held_out is not None else list(cfg["test_speakers"] or speakers)
        recordings = list_recordings(recordings_folder(data_dir), sorted(set(speakers + test_speakers)) or None)

        def split_of(recording: Recording) -> str:
            if held_out is not None:
                return "test" if recording.speaker == held_out else "val" if recording.index >= cfg["val_from_index"] else "train"
            return "val" if recording.split == "train" and recording.index >= cfg["val_from_index"] else recording.split

        def chosen(split: str, allowed: list[str]) -> list[int]:
            return [k for k, r in enumerate(recordings) if split_of(r) == split and (not allowed or r.speaker in allowed)]

        rows = {"train": chosen("train", speakers), "val": chosen("val", speakers), "test": chosen("test", test_speakers)}
        for split, index in rows.items():
            if not index:
                raise UserError(f"the fsdd {split} split is empty: check task.speakers / task.test_speakers / task.held_out_speaker")
        return recordings, rows

    def arrange(self, features: Tensor, samples: Tensor, speakers: list[str]) -> Tensor:
        """The front end's features [n, frames, C] in the task's layout, each
        recording stretched and normalised (over its own frames, or its speaker's)
        first if asked."""
        if self.cfg.get("stretch"):
            features = stretched(features, samples, self.cfg["num_samples"])
        if self.normalise in ("cmn", "cmvn"):
            features = features - features.mean(1, keepdim=True)
            if self.normalise == "cmvn":
                features = features / features.std(1, keepdim=True).clamp_min(CMVN_FLOOR)
        if self.normalise in ("speaker_cmvn", "speaker_heq"):
            frames = features.shape[1]
            voiced = torch.ones(features.shape[:2], dtype=torch.bool) if self.cfg.get("stretch") else \
                torch.arange(frames) < (samples.long() * frames + self.cfg["num_samples"] - 1)[:, None] // self.cfg["num_samples"]
            features = features.clone()
            for speaker in sorted(set(speakers)):
                rows = torch.tensor([k for k, name in enumerate(speakers) if name == speaker])
                own = features[rows][voiced[rows]]  # [voiced frames of the speaker, C]
                if self.normalise == "speaker_cmvn":
                    features[rows] = (features[rows] - own.mean(0)) / own.std(0).clamp_min(CMVN_FLOOR)
                else:
                    features[rows] = equalised(features[rows], own)
        features = with_deltas(features, self.cfg.get("deltas", 0))
        if self.cfg["layout"] == "averaged":
            features = features.mean(1)
            steps, size = self.cfg["steps"], features.shape[1]
            if steps <= 0 or size % steps:
                raise UserError(f"task.steps must divide the front end's {size} coefficients, got {steps}")
            features = features.reshape(len(features), steps, size // steps)
        return features

    def scaled(self, features: Tensor) -> Tensor:
        """Values in [0, 1]: min-max, or for on_off the two polarities of the
        standardised value z side by side, [clip(z, 0, 1), clip(-z, 0, 1)]."""
        z = (features - self.low) / self.scale
        if self.scaling == "minmax":
            return z.clamp_(0.0, 1.0)
        return torch.cat([z.clamp(0.0, 1.0), (-z).clamp_(0.0, 1.0)], -1)

    def values(self, split: str, index: Tensor | slice) -> Tensor:
        return self.inputs[split][index]

    @cached_property
    def train_variants(self) -> Tensor | None:
        """[1 + copies, N, T, I]: variant 0 the clean training recordings, 1..copies
        their augmented copies (None without copies). Built on the first training
        step, so evaluating a checkpoint computes none. Every recording read is
        augmented, so that each split of these speakers finds its copies in the cache."""
        if self.augment["copies"] == 0:
            return None
        return torch.stack([self.inputs["train"]] + [self.augmented_train(copy) for copy in range(1, self.augment["copies"] + 1)])

    def train_values(self, step: int, index: Tensor) -> Tensor:
        if self.train_variants is None and not masks_features(self.augment):
            return self.inputs["train"][index]
        generator = make_generator(self.seed, MASK, step)
        if self.train_variants is None:
            values = self.inputs["train"][index]
        else:
            variant = torch.randint(len(self.train_variants), (len(index),), generator=generator)
            values = self.train_variants[variant, index]
        return mask_features(values, self.augment, generator) if masks_features(self.augment) else values

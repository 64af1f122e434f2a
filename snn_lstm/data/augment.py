"""Augmenting spoken digits so that a model hears more voices than the training
speakers'.

Waveform augmentation (before the front end). Copy k = 1..copies of every training
recording gets, drawn independently per recording from the run's seed and k:

    speed   x(t) -> x(f t), f drawn from `speeds` (tempo and pitch together, as
            Kaldi's speed perturbation; a resampling to sample_rate / f)
    tempo   spoken t times faster at the same pitch, t drawn from `tempos` (a
            phase-vocoder stretch to 1/t of the length)
    pitch   a shift of n semitones, n drawn from `pitch_steps`, tempo kept (a
            resampling by 2^(-n/12), then a phase-vocoder stretch back)
    noise   white noise at a signal-to-noise ratio drawn uniformly in
            [snr_db[0], snr_db[1]] dB, relative to the mean power of the
            (peak-normalised, fixed-length) recording

Each copy's features are computed once and cached like the clean ones, keyed by the
augmentation settings and (seed, k) as well, so the clean features' cache is the
same with or without augmentation.

Feature masking (SpecAugment-style, after scaling to [0, 1]): each training example
of each step gets `time_masks` runs of up to `time_mask_width` frames and
`freq_masks` bands of up to `freq_mask_width` coefficients set to 0 (no spikes),
drawn from the step's generator, so a batch depends only on (seed, step).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torchaudio.functional as AF
from torch import Tensor

from snn_lstm.encoders import AUGMENT, make_generator
from snn_lstm.errors import UserError

# resampling ratios on this grid of the sample rate keep torchaudio's polyphase
# filter short (8 kHz: multiples of 100 Hz); an exact 8000 / 0.9 Hz is tens of times slower
RATE_GRID = 80
STRETCH_FFT = 256


def check_augment(cfg: dict[str, Any]) -> None:
    """What the schema's domains cannot say (each value's range they do)."""
    snr = cfg["snr_db"]
    if snr is not None and (len(snr) != 2 or snr[0] > snr[1]):
        raise UserError(f"task.augment.snr_db must be [low, high] in dB with low <= high, got {list(snr)}")


def masks_features(cfg: dict[str, Any]) -> bool:
    return (cfg["time_masks"] > 0 and cfg["time_mask_width"] > 0) or (cfg["freq_masks"] > 0 and cfg["freq_mask_width"] > 0)


def grid_rate(sample_rate: int, factor: float) -> int:
    step = sample_rate // RATE_GRID
    return max(step, round(sample_rate * factor / step) * step)


def change_speed(waves: Tensor, sample_rate: int, factor: float) -> Tensor:
    """x(f t): played f times faster (shorter by 1/f, pitch up by f)."""
    if factor == 1.0:
        return waves
    return AF.resample(waves, grid_rate(sample_rate, factor), sample_rate)


def stretch(waves: Tensor, length: int) -> Tensor:
    """`waves` [n, S] played at another tempo to `length` samples, pitch kept (phase vocoder)."""
    window = torch.hann_window(STRETCH_FFT)
    hop = STRETCH_FFT // 4
    spectrum = torch.stft(waves, STRETCH_FFT, hop, window=window, return_complex=True)
    phase_advance = torch.linspace(0, math.pi * hop, spectrum.shape[-2])[..., None]
    stretched = AF.phase_vocoder(spectrum, waves.shape[-1] / length, phase_advance)
    return torch.istft(stretched, STRETCH_FFT, hop, window=window, length=length)


def change_tempo(waves: Tensor, factor: float) -> Tensor:
    """Spoken `factor` times faster at the same pitch (shorter by 1/factor)."""
    return waves if factor == 1.0 else stretch(waves, round(waves.shape[-1] / factor))


def shift_pitch(waves: Tensor, sample_rate: int, steps: float) -> Tensor:
    """Pitch up by `steps` semitones at the same tempo: faster by 2^(steps/12)
    (resampling), then stretched back to the original length."""
    if steps == 0:
        return waves
    return stretch(AF.resample(waves, grid_rate(sample_rate, 2.0 ** (steps / 12)), sample_rate), waves.shape[-1])


def add_noise(waves: Tensor, snr_db: Tensor, generator: torch.Generator) -> Tensor:
    """waves + n, n white with power P_x / 10^(snr/10), P_x the mean power of each wave."""
    power = waves.pow(2).mean(-1, keepdim=True).clamp_min(1e-12)
    noise = torch.randn(waves.shape, generator=generator)
    return waves + noise * (power / 10.0 ** (snr_db[:, None] / 10.0)).sqrt()


class WaveAugmentation:
    """Copy `copy` of the training recordings: per recording a speed, a tempo, a pitch shift
    and a noise level, all drawn from (seed, copy)."""

    def __init__(self, cfg: dict[str, Any], seed: int, copy: int, count: int, sample_rate: int):
        self.cfg, self.sample_rate = cfg, sample_rate
        self.key = {"speeds": list(cfg["speeds"]), "tempos": list(cfg["tempos"]), "pitch_steps": list(cfg["pitch_steps"]),
                    "snr_db": None if cfg["snr_db"] is None else list(cfg["snr_db"]), "seed": seed, "copy": copy}
        self.generator = make_generator(seed, AUGMENT, copy)
        self.speed = torch.tensor(cfg["speeds"], dtype=torch.float64)[
            torch.randint(len(cfg["speeds"]), (count,), generator=self.generator)]
        self.tempo = torch.tensor(cfg["tempos"], dtype=torch.float64)[
            torch.randint(len(cfg["tempos"]), (count,), generator=self.generator)]
        self.pitch = torch.tensor(cfg["pitch_steps"], dtype=torch.float64)[torch.randint(len(cfg["pitch_steps"]), (count,), generator=self.generator)]
        low, high = cfg["snr_db"] or (0.0, 0.0)
        self.snr_db = low + (high - low) * torch.rand(count, generator=self.generator)

    def waves(self, waves: list[Tensor], start: int) -> list[Tensor]:
        """Recordings start, start + 1, ... changed in speed, tempo and pitch (each its own length)."""
        changed = []
        for k, wave in enumerate(waves, start):
            wave = change_speed(wave[None], self.sample_rate, float(self.speed[k]))
            wave = change_tempo(wave, float(self.tempo[k]))
            changed.append(shift_pitch(wave, self.sample_rate, float(self.pitch[k]))[0])
        return changed

    def noise(self, waves: Tensor, start: int) -> Tensor:
        """The fixed-length batch [n, S] of recordings start, ... with their noise."""
        if self.cfg["snr_db"] is None:
            return waves
        return add_noise(waves, self.snr_db[start : start + len(waves)], self.generator)


def mask_features(values: Tensor, cfg: dict[str, Any], generator: torch.Generator) -> Tensor:
    """`values` [n, T, C] with random runs of frames and bands of coefficients set to 0."""
    n, frames, coefficients = values.shape
    keep = torch.ones(n, frames, coefficients, dtype=torch.bool)
    for count, width, size, axis in ((cfg["time_masks"], cfg["time_mask_width"], frames, 1),
                                     (cfg["freq_masks"], cfg["freq_mask_width"], coefficients, 2)):
        positions = torch.arange(size)
        for _ in range(count if width > 0 else 0):
            widths = torch.randint(0, min(width, size) + 1, (n,), generator=generator)
            starts = (torch.rand(n, generator=generator) * (size - widths + 1)).long()
            hit = (positions >= starts[:, None]) & (positions < (starts + widths)[:, None])  # [n, size]
            keep &= ~(hit[:, :, None] if axis == 1 else hit[:, None, :])
    return values * keep

"""Audio front ends: a waveform in, a sequence of feature frames out.

Every recording is first scaled to a peak of 1 and cut or zero-padded to
`num_samples` (8,192 samples = 1.02 s at 8 kHz; 99.8% of FSDD is shorter), so all
recordings give the same number of frames.

    scattering  1-D wavelet scattering (kymatio; the paper's front end), orders 1
                and 2, log(|S x| + log_eps); with J=8, Q=12: 336 coefficients in
                num_samples / 2^J frames (the paper averages them over time)
    mfcc        torchaudio MFCC: n_mfcc cepstral coefficients of a log-mel spectrum
    logmel      log(mel power + log_eps), n_mels bands

Features are computed once per (front end settings, recordings) and cached with
Hugging Face `datasets` (Arrow files, memory-mapped) under the cache folder, keyed
by a hash of the settings and of every file's bytes, so a changed setting or a
replaced recording computes afresh. Each recording's length in samples is stored
beside its features (CACHE_FORMAT 2); caches of the earlier format are not read,
their features are computed once more.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torchaudio
from torch import Tensor

from snn_lstm.data.augment import WaveAugmentation
from snn_lstm.errors import UserError

log = logging.getLogger("snnlstm.frontends")
BATCH = 64
CACHE_FORMAT = 2  # 2: each recording's length in samples beside its features
FRONTENDS = ("scattering", "mfcc", "logmel")


def fixed_length(wave: np.ndarray | Tensor, num_samples: int) -> Tensor:
    """Peak-normalised, then cut or zero-padded to `num_samples`."""
    x = torch.zeros(num_samples)
    wave = torch.as_tensor(wave[:num_samples])
    peak = wave.abs().max()
    x[: len(wave)] = wave / peak if peak > 0 else wave
    return x


def build_frontend(cfg: dict[str, Any], sample_rate: int, num_samples: int) -> Callable[[Tensor], Tensor]:
    """A function from waveforms [n, num_samples] to features [n, frames, coefficients]."""
    name = cfg["name"]
    if name == "scattering":
        from kymatio.torch import Scattering1D

        if not (cfg["J"] > 0 and cfg["Q"] > 0 and 2 ** cfg["J"] <= num_samples):
            raise UserError(f"scattering needs J > 0, Q > 0 and 2^J <= task.num_samples, got J={cfg['J']}, Q={cfg['Q']}")
        scattering = Scattering1D(J=cfg["J"], shape=num_samples, Q=cfg["Q"])
        higher_orders = torch.from_numpy(scattering.meta()["order"] > 0)

        def scatter(x: Tensor) -> Tensor:
            coefficients = scattering(x)[:, higher_orders]  # [n, C, frames]; order 0 is a plain average
            return torch.log(coefficients.abs() + cfg["log_eps"]).transpose(1, 2)

        return scatter
    if name in ("mfcc", "logmel"):
        mel = {"n_fft": cfg["n_fft"], "hop_length": cfg["hop_length"], "n_mels": cfg["n_mels"]}
        if min(mel.values()) <= 0:
            raise UserError(f"frontend {name}: n_fft, hop_length and n_mels must be positive, got {mel}")
        if name == "mfcc":
            transform = torchaudio.transforms.MFCC(sample_rate=sample_rate, n_mfcc=cfg["n_mfcc"], melkwargs=mel)
            return lambda x: transform(x).transpose(1, 2)
        spectrogram = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, **mel)
        return lambda x: torch.log(spectrogram(x) + cfg["log_eps"]).transpose(1, 2)
    raise UserError(f"unknown front end '{name}': choose one of {', '.join(FRONTENDS)}")


def finite(features: np.ndarray, paths: list[Path], cache: Path | None) -> np.ndarray:
    """`features` when every value is a finite number; else one line naming the first
    recording whose features are not (or the cache folder they came from)."""
    bad = ~np.isfinite(features.reshape(len(features), -1)).all(axis=1)
    if bad.any():
        where = f"the cached features in {cache} (delete that folder to compute them again)" if cache else "the front end"
        raise UserError(f"{paths[int(bad.argmax())]}: {where} gave values that are not finite numbers "
                        f"({int(bad.sum())} recording(s) in all): replace or remove the recording, or change the front end")
    return features


def cache_key(cfg: dict[str, Any], sample_rate: int, num_samples: int, paths: list[Path],
              augmentation: WaveAugmentation | None = None) -> str:
    settings = [cfg, sample_rate, num_samples, CACHE_FORMAT] + ([augmentation.key] if augmentation else [])
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in paths:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def cached_features(
    cfg: dict[str, Any],
    paths: list[Path],
    read: Callable[[Path], np.ndarray],
    sample_rate: int,
    num_samples: int,
    cache_dir: Path,
    augmentation: WaveAugmentation | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features [len(paths), frames, coefficients] of the recordings (changed by
    `augmentation` first, if given) and the samples each held before it was cut or
    padded to `num_samples`, from the cache when these settings have seen these files
    before."""
    import datasets

    datasets.disable_progress_bars()
    folder = cache_dir / "frontends" / f"{cfg['name']}-{cache_key(cfg, sample_rate, num_samples, paths, augmentation)}"
    if folder.is_dir():
        log.info("front end %s: features from %s", cfg["name"], folder)
        table = datasets.load_from_disk(str(folder)).with_format("numpy")
        return finite(np.asarray(table["features"]), paths, folder), np.asarray(table["samples"])
    frontend = build_frontend(cfg, sample_rate, num_samples)
    log.info("front end %s: computing features of %d recordings (cached in %s)", cfg["name"], len(paths), folder)
    chunks, samples = [], []
    with torch.no_grad():
        for start in range(0, len(paths), BATCH):
            waves = [torch.from_numpy(read(path)) for path in paths[start : start + BATCH]]
            if augmentation:
                waves = augmentation.waves(waves, start)
            samples += [min(len(wave), num_samples) for wave in waves]
            waves = torch.stack([fixed_length(wave, num_samples) for wave in waves])
            if augmentation:
                waves = augmentation.noise(waves, start)
            chunks.append(frontend(waves).float().numpy())
    features = finite(np.concatenate(chunks), paths, None)
    table = datasets.Dataset.from_dict(
        {"name": [path.name for path in paths], "features": features, "samples": samples},
        features=datasets.Features({
            "name": datasets.Value("string"),
            "features": datasets.Array2D(shape=features.shape[1:], dtype="float32"),
            "samples": datasets.Value("int32"),
        }),
    )
    # written aside, then renamed: a killed run leaves no half cache behind
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{folder.name}.part-", dir=folder.parent))
    table.save_to_disk(str(partial))
    try:
        partial.replace(folder)
    except OSError:  # a run beside this one cached the same features first
        shutil.rmtree(partial, ignore_errors=True)
    return features, np.asarray(samples)

"""The Free Spoken Digit Dataset (FSDD): mono 8 kHz wav files named
``{digit}_{speaker}_{index}.wav`` in ``<paths.data_dir>/fsdd/recordings``.

Official split: index 0-4 is the test set, 5-49 the training set (with the paper's
4 speakers, 1,800 / 200 recordings). When the folder is missing the recordings are
fetched from the dataset's GitHub release, which holds 6 speakers; the default
speaker list keeps the paper's 4.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional

from snn_lstm.data.idx import download, offline
from snn_lstm.errors import UserError

SAMPLE_RATE = 8000
TEST_INDICES = range(0, 5)
PAPER_SPEAKERS = ("jackson", "nicolas", "theo", "yweweler")
ARCHIVE_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.9.zip"
NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[a-z]+)_(?P<index>[0-9]+)\.wav$")


@dataclass(frozen=True)
class Recording:
    path: Path
    digit: int
    speaker: str
    index: int

    @property
    def split(self) -> str:
        return "test" if self.index in TEST_INDICES else "train"


def parse_name(path: Path) -> Recording:
    """``7_jackson_32.wav`` -> Recording(digit 7, speaker jackson, index 32)."""
    match = NAME.match(path.name)
    if match is None:
        raise UserError(f"{path} is not named {{digit}}_{{speaker}}_{{index}}.wav: rename or remove it")
    return Recording(path, int(match["digit"]), match["speaker"], int(match["index"]))


def recordings_folder(data_dir: str | Path) -> Path:
    """The folder of wav files, fetched from the public release if it is missing."""
    folder = Path(data_dir) / "fsdd" / "recordings"
    if folder.is_dir():
        return folder
    if offline():
        raise UserError(
            f"FSDD is not in {folder} and cannot be downloaded here: put the wav files there "
            "or set paths.data_dir to the folder that holds fsdd/recordings/"
        )
    try:
        fetch(folder)
    except (OSError, zipfile.BadZipFile) as error:
        raise UserError(f"FSDD is not in {folder} and downloading it failed ({error}): put the wav files there")
    return folder


def fetch(folder: Path) -> None:
    """Download the release archive and unpack its recordings/ into `folder` (atomically)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        archive = Path(scratch) / "fsdd.zip"
        download(ARCHIVE_URL, archive)
        unpacked = Path(scratch) / "recordings"
        unpacked.mkdir()
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.namelist():
                if "/recordings/" in member and member.endswith(".wav"):
                    (unpacked / Path(member).name).write_bytes(bundle.read(member))
        if not any(unpacked.iterdir()):
            raise OSError(f"{ARCHIVE_URL} holds no recordings/*.wav")
        unpacked.replace(folder)


def list_recordings(folder: Path, speakers: list[str] | None) -> list[Recording]:
    """Every wav file of `folder` (of `speakers` only, if given), sorted by name."""
    found = sorted((parse_name(path) for path in folder.glob("*.wav")), key=lambda r: r.path.name)
    if speakers:
        unknown = set(speakers) - {r.speaker for r in found}
        if unknown:
            raise UserError(f"no recordings of speaker(s) {', '.join(sorted(unknown))} in {folder}: check task.speakers")
        found = [r for r in found if r.speaker in speakers]
    if not found:
        raise UserError(f"{folder} holds no {{digit}}_{{speaker}}_{{index}}.wav files: put the FSDD recordings there")
    return found


def read_wav(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The mono waveform of `path` as float32 in [-1, 1] at `sample_rate` (resampled
    if the file has another rate)."""
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise UserError(f"{path} is not a readable wav file ({error}): replace or remove it")
    if samples.shape[1] != 1:
        raise UserError(f"{path} has {samples.shape[1]} channels; FSDD recordings are mono: replace or remove it")
    if len(samples) == 0:
        raise UserError(f"{path} holds no samples: replace or remove it")
    if not np.isfinite(samples).all():
        raise UserError(f"{path} holds samples that are not finite numbers (NaN or infinite): replace or remove it")
    wave = samples[:, 0]
    if rate != sample_rate:
        wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, sample_rate).numpy()
    return wave

"""FSDD: file names, the official split, front ends, the feature cache, bad files."""

from __future__ import annotations

import io
import os
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import snn_lstm.data.frontends as frontends
from snn_lstm.data.fsdd import ARCHIVE_URL, PAPER_SPEAKERS, list_recordings, parse_name, read_wav, recordings_folder
from snn_lstm.errors import UserError
from snn_lstm.tasks import build_task

from conftest import compose_train, snnlstm, write_tiny_fsdd

SCATTERING = {"name": "scattering", "J": 6, "Q": 8, "log_eps": 1e-6}
MFCC = {"name": "mfcc", "n_mfcc": 13, "n_mels": 20, "n_fft": 256, "hop_length": 128, "log_eps": 1e-6}


def speech_cfg(**changes):
    cfg = {"name": "fsdd", "kind": "speech", "readout": "last", "hidden_size": 8, "speakers": ["jackson", "theo"],
           "test_speakers": None, "val_from_index": 45, "num_samples": 2048, "layout": "averaged", "steps": 1,
           "eval_draws": 1, "frontend": MFCC}
    cfg.update(changes)
    return cfg


def make_task(data_dir: Path, cache_dir: Path, **changes):
    return build_task(speech_cfg(**changes), encoder="bernoulli", data_dir=str(data_dir), seed=0, eval_limit=None,
                      cache_dir=str(cache_dir))


@pytest.fixture
def fsdd_dir(tmp_path) -> Path:
    return write_tiny_fsdd(tmp_path / "data")


def test_names_give_digit_speaker_and_index():
    recording = parse_name(Path("7_jackson_32.wav"))
    assert (recording.digit, recording.speaker, recording.index, recording.split) == (7, "jackson", 32, "train")
    assert parse_name(Path("0_theo_4.wav")).split == "test" and parse_name(Path("0_theo_5.wav")).split == "train"
    with pytest.raises(UserError, match=r"notes\.wav is not named \{digit\}_\{speaker\}_\{index\}\.wav"):
        parse_name(Path("notes.wav"))


def test_official_split_and_speaker_choice(fsdd_dir, tmp_path):
    task = make_task(fsdd_dir, tmp_path / "cache")
    # indices 0, 1 test; 5, 6 train; 45 validation; 10 digits x 2 speakers
    assert {split: len(labels) for split, labels in task.labels.items()} == {"train": 40, "val": 20, "test": 40}
    assert all(int(name.split("_")[2][:-4]) < 5 for name in task.recordings["test"])
    assert all(5 <= int(name.split("_")[2][:-4]) < 45 for name in task.recordings["train"])
    assert task.labels["test"].tolist() == [int(name[0]) for name in task.recordings["test"]]
    only_theo = make_task(fsdd_dir, tmp_path / "cache", speakers=["theo"])
    assert {name.split("_")[1] for names in only_theo.recordings.values() for name in names} == {"theo"}
    unseen = make_task(fsdd_dir, tmp_path / "cache", speakers=["jackson"], test_speakers=["theo"])
    assert {n.split("_")[1] for n in unseen.recordings["train"]} == {"jackson"}
    assert {n.split("_")[1] for n in unseen.recordings["test"]} == {"theo"}
    with pytest.raises(UserError, match="no recordings of speaker.*nobody"):
        make_task(fsdd_dir, tmp_path / "cache", speakers=["nobody"])


def test_the_real_fsdd_has_the_papers_split():
    folder = Path(os.environ.get("SNNLSTM_DATA_DIR", "data")) / "fsdd" / "recordings"
    if not folder.is_dir():
        pytest.skip(f"no FSDD copy in {folder}")
    recordings = list_recordings(folder, list(PAPER_SPEAKERS))
    splits = [r.split for r in recordings]
    assert (splits.count("train"), splits.count("test")) == (1800, 200)


def test_layouts_and_training_set_scaling(fsdd_dir, tmp_path):
    frames = make_task(fsdd_dir, tmp_path / "cache", layout="frames")
    assert frames.inputs["train"].shape == (40, 2048 // 128 + 1, 13) and frames.input_size == 13
    train = frames.inputs["train"].flatten(0, 1)
    assert torch.allclose(train.min(0).values, torch.zeros(13)) and torch.allclose(train.max(0).values, torch.ones(13))
    assert all(0 <= x.min() and x.max() <= 1 for x in frames.inputs.values())  # val and test clipped to [0, 1]
    # the statistics come from the training recordings only: other test files change nothing else
    other = make_task(fsdd_dir, tmp_path / "cache", layout="frames", test_speakers=["theo"])
    assert torch.equal(other.inputs["train"], frames.inputs["train"])
    averaged = make_task(fsdd_dir, tmp_path / "cache", frontend=SCATTERING, steps=5)
    coefficients = frontends.build_frontend(SCATTERING, 8000, 2048)(torch.zeros(1, 2048)).shape[-1]
    assert averaged.inputs["test"].shape == (40, 5, coefficients // 5)
    with pytest.raises(UserError, match="task.steps must divide"):
        make_task(fsdd_dir, tmp_path / "cache", steps=7)


def test_the_paper_scattering_gives_336_coefficients_in_32_frames():
    scattering = frontends.build_frontend({"name": "scattering", "J": 8, "Q": 12, "log_eps": 1e-6}, 8000, 8192)
    assert scattering(torch.randn(1, 8192)).shape == (1, 32, 336)  # the paper's 8 x 42 after averaging


def test_features_are_cached_and_recomputed_when_settings_or_files_change(fsdd_dir, tmp_path, monkeypatch):
    built = []
    real = frontends.build_frontend
    monkeypatch.setattr(frontends, "build_frontend", lambda *a: built.append(a) or real(*a))
    first = make_task(fsdd_dir, tmp_path / "cache")
    second = make_task(fsdd_dir, tmp_path / "cache")
    assert len(built) == 1 and torch.equal(first.inputs["test"], second.inputs["test"])
    make_task(fsdd_dir, tmp_path / "cache", frontend={**MFCC, "n_mfcc": 12})
    assert len(built) == 2
    wave, _ = soundfile.read(fsdd_dir / "fsdd" / "recordings" / "3_theo_0.wav")
    soundfile.write(fsdd_dir / "fsdd" / "recordings" / "3_theo_0.wav", wave[::-1], 8000)
    make_task(fsdd_dir, tmp_path / "cache")
    assert len(built) == 3
    assert not list((tmp_path / "cache" / "frontends").glob("*.part*"))


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000) -> Path:
    soundfile.write(path, samples.astype(np.float32), rate, subtype="PCM_16")
    return path


def test_bad_files_are_named_and_other_rates_resampled(tmp_path):
    tone = np.sin(np.arange(16000) / 5.0) * 0.5
    resampled = read_wav(write_wav(tmp_path / "1_a_5.wav", tone, rate=16000))
    assert resampled.dtype == np.float32 and len(resampled) == 8000
    with pytest.raises(UserError, match=r"2_a_5\.wav has 2 channels; FSDD recordings are mono"):
        read_wav(write_wav(tmp_path / "2_a_5.wav", np.stack([tone, tone], 1)))
    with pytest.raises(UserError, match=r"3_a_5\.wav holds no samples"):
        read_wav(write_wav(tmp_path / "3_a_5.wav", np.zeros(0)))
    (tmp_path / "4_a_5.wav").write_text("not audio at all")
    with pytest.raises(UserError, match=r"4_a_5\.wav is not a readable wav file"):
        read_wav(tmp_path / "4_a_5.wav")


def test_a_missing_folder_is_fetched_or_named_offline(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="FSDD is not in .*fsdd/recordings and cannot be downloaded here"):
        recordings_folder(tmp_path)
    source = write_tiny_fsdd(tmp_path / "release", speakers=("jackson",), indices=(0,)) / "fsdd" / "recordings"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for wav in source.iterdir():
            bundle.write(wav, f"free-spoken-digit-dataset-1.0.9/recordings/{wav.name}")
        bundle.writestr("free-spoken-digit-dataset-1.0.9/README.md", "readme")
    asked = []
    monkeypatch.delenv("SNNLSTM_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: asked.append(url) or io.BytesIO(archive.getvalue()))
    folder = recordings_folder(tmp_path / "data")
    assert asked == [ARCHIVE_URL] and sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in source.iterdir())
    assert list((tmp_path / "data" / "fsdd").iterdir()) == [folder]  # nothing but the recordings is left behind


def test_cli_trains_two_steps_and_scores_train_and_test(fsdd_dir, tmp_path, cli_env):
    result = snnlstm(["train", "task=fsdd", "task.speakers=[jackson,theo]", "task.num_samples=2048", "trainer=smoke",
                      "tracking=none", "run_name=smoke", f"paths.data_dir={fsdd_dir}", f"paths.run_dir={tmp_path / 'runs'}",
                      f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path, cli_env)
    assert "train/acc=" in result.stderr and "test/acc=" in result.stderr
    checkpoint = tmp_path / "runs" / "fsdd" / "smoke" / "last.pt"
    metrics = torch.load(checkpoint, weights_only=True)["metrics"]
    assert {"train/acc", "test/acc", "activity/l0/h", "ops/ac_per_sample", "energy/slstm_nj"} <= set(metrics)
    scored = snnlstm(["evaluate", f"ckpt={checkpoint}", "split=train", "tracking=none", f"paths.data_dir={fsdd_dir}",
                      f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path, cli_env)
    assert "train/acc=" in scored.stdout


def test_frontend_is_a_config_group():
    cfg = compose_train(["task=fsdd", "task/frontend=mfcc", "task.layout=frames"])
    assert cfg.task.frontend.name == "mfcc" and cfg.task.layout == "frames"
    assert compose_train(["task=fsdd"]).task.frontend.name == "scattering"  # the paper's

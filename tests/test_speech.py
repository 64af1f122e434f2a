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

import snn_lstm.data.augment as augment
import snn_lstm.data.frontends as frontends
from snn_lstm.data.fsdd import ARCHIVE_URL, PAPER_SPEAKERS, list_recordings, parse_name, read_wav, recordings_folder
from snn_lstm.errors import UserError
from snn_lstm.tasks import build_task, speech

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
    result = snnlstm(["train", "task=fsdd", "task.speakers=[jackson,theo]", "task.num_samples=2048", "task.eval_draws=2", "trainer=smoke",
                      "tracking=none", "run_name=smoke", f"paths.data_dir={fsdd_dir}", f"paths.run_dir={tmp_path / 'runs'}",
                      f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path, cli_env)
    assert "train/acc=" in result.stderr and "test/acc=" in result.stderr
    checkpoint = tmp_path / "runs" / "fsdd" / "smoke" / "last.pt"
    metrics = torch.load(checkpoint, weights_only=True)["metrics"]
    assert {"train/acc", "test/acc", "activity/l0/h", "ops/ac_per_sample", "energy/slstm_nj"} <= set(metrics)
    assert metrics["ops/presentations"] == 2  # the energy proxy counts both spike trains of a decision
    scored = snnlstm(["evaluate", f"ckpt={checkpoint}", "split=train", "tracking=none", f"paths.data_dir={fsdd_dir}",
                      f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path, cli_env)
    assert "train/acc=" in scored.stdout


def test_frontend_is_a_config_group():
    cfg = compose_train(["task=fsdd", "task/frontend=mfcc", "task.layout=frames"])
    assert cfg.task.frontend.name == "mfcc" and cfg.task.layout == "frames"
    assert compose_train(["task=fsdd"]).task.frontend.name == "scattering"  # the paper's


def test_leaving_one_speaker_out_tests_on_all_its_recordings(fsdd_dir, tmp_path):
    task = make_task(fsdd_dir, tmp_path / "cache", held_out_speaker="theo")
    speakers = {split: {name.split("_")[1] for name in names} for split, names in task.recordings.items()}
    assert speakers == {"train": {"jackson"}, "val": {"jackson"}, "test": {"theo"}}
    # every theo recording is tested (indices 0, 1, 5, 6, 45); jackson's 0-44 train (official test indices too), 45 validates
    assert len(task.labels["test"]) == 50 and len(task.labels["train"]) == 40 and len(task.labels["val"]) == 10
    assert all(int(name.split("_")[2][:-4]) < 45 for name in task.recordings["train"])
    with pytest.raises(UserError, match="task.held_out_speaker 'nobody' is not one of task.speakers"):
        make_task(fsdd_dir, tmp_path / "cache", held_out_speaker="nobody")
    with pytest.raises(UserError, match="held_out_speaker already chooses the test speaker: set task.test_speakers=null"):
        make_task(fsdd_dir, tmp_path / "cache", held_out_speaker="theo", test_speakers=["jackson"])


def test_per_recording_normalisation_removes_each_recordings_mean_and_spread(fsdd_dir, tmp_path):
    plain = make_task(fsdd_dir, tmp_path / "cache", layout="frames")
    raw = torch.from_numpy(frontends.cached_features(MFCC, [fsdd_dir / "fsdd" / "recordings" / "3_theo_0.wav"], read_wav,
                                                     8000, 2048, tmp_path / "cache")[0])[0]
    for mode in ("cmn", "cmvn"):
        task = make_task(fsdd_dir, tmp_path / "cache", layout="frames", normalise=mode)
        expected = raw - raw.mean(0)
        if mode == "cmvn":
            expected = expected / expected.std(0).clamp_min(1e-3)
        # the scaling to [0, 1] that follows is affine per coefficient, so one test recording is the expected one
        # up to a per-coefficient slope and offset, fitted from the training statistics
        row = task.recordings["test"].index("3_theo_0.wav")
        assert torch.allclose(task.inputs["test"][row], ((expected - task.low) / task.scale).clamp(0, 1), atol=1e-5)
        assert not torch.allclose(task.inputs["test"][row], plain.inputs["test"][row])
    with pytest.raises(UserError, match="task.normalise=cmvn works on a recording's frames: set task.layout=frames"):
        make_task(fsdd_dir, tmp_path / "cache", normalise="cmvn")


def dominant_frequency(wave: torch.Tensor, rate: int = 8000) -> float:
    spectrum = torch.fft.rfft(wave * torch.hann_window(len(wave)))
    return float(spectrum.abs().argmax()) * rate / len(wave)


def test_speed_pitch_and_noise_change_the_audio_as_asked():
    t = torch.arange(8000) / 8000
    tone = torch.sin(2 * torch.pi * 500 * t)[None]
    faster = augment.change_speed(tone, 8000, 1.1)
    assert abs(faster.shape[-1] - 8000 / 1.1) < 10 and abs(dominant_frequency(faster[0]) - 550) < 5
    higher = augment.shift_pitch(tone, 8000, 2)
    assert higher.shape == tone.shape and abs(dominant_frequency(higher[0]) - 500 * 2 ** (2 / 12)) < 5
    slower = augment.change_tempo(tone, 0.8)
    assert slower.shape[-1] == 10000 and abs(dominant_frequency(slower[0]) - 500) < 5
    assert torch.equal(augment.change_tempo(tone, 1.0), tone)
    assert torch.equal(augment.shift_pitch(tone, 8000, 0), tone) and torch.equal(augment.change_speed(tone, 8000, 1.0), tone)
    noisy = augment.add_noise(tone.repeat(2, 1), torch.tensor([10.0, 30.0]), torch.Generator().manual_seed(0))
    snr = 10 * torch.log10(tone.pow(2).mean() / (noisy - tone).pow(2).mean(-1))
    assert torch.allclose(snr, torch.tensor([10.0, 30.0]), atol=0.3)


AUGMENT = {"copies": 2, "speeds": [0.9, 1.1], "tempos": [0.8, 1.0], "pitch_steps": [-1, 1], "snr_db": [10.0, 20.0],
           "time_masks": 0, "time_mask_width": 0, "freq_masks": 0, "freq_mask_width": 0}


def test_augmented_copies_are_drawn_from_the_seed_and_leave_the_clean_features_alone(fsdd_dir, tmp_path, monkeypatch):
    clean = make_task(fsdd_dir, tmp_path / "cache", layout="frames")
    clean_caches = set((tmp_path / "cache" / "frontends").iterdir())
    task = make_task(fsdd_dir, tmp_path / "cache", layout="frames", augment=AUGMENT)
    assert set((tmp_path / "cache" / "frontends").iterdir()) == clean_caches  # no copies until training asks
    for split in ("train", "val", "test"):
        assert torch.equal(task.inputs[split], clean.inputs[split])  # evaluation sees the clean recordings
    variants = task.train_variants
    assert set((tmp_path / "cache" / "frontends").iterdir()) > clean_caches  # the copies are cached beside
    assert variants.shape == (3, *clean.inputs["train"].shape) and torch.equal(variants[0], clean.inputs["train"])
    assert not torch.allclose(variants[1], variants[0]) and not torch.allclose(variants[2], variants[1])
    assert 0 <= variants.min() and variants.max() <= 1
    built = []
    real = frontends.build_frontend
    monkeypatch.setattr(frontends, "build_frontend", lambda *a: built.append(a) or real(*a))
    again = make_task(fsdd_dir, tmp_path / "cache", layout="frames", augment=AUGMENT)
    assert torch.equal(again.train_variants, variants) and not built  # same seed: the same copies, from the cache
    other_seed = build_task(speech_cfg(layout="frames", augment=AUGMENT), encoder="bernoulli", data_dir=str(fsdd_dir),
                            seed=1, eval_limit=None, cache_dir=str(tmp_path / "cache"))
    assert not torch.allclose(other_seed.train_variants[1], variants[1]) and len(built) == 2
    # a training batch mixes clean and augmented examples and depends on (seed, step) alone
    first, labels = task.train_batch(3, 16)
    assert torch.equal(first, again.train_batch(3, 16)[0]) and not torch.equal(first, task.train_batch(4, 16)[0])
    values = task.train_values(3, torch.arange(40))
    assert any(torch.equal(values[k], variants[v, k]) for k in range(40) for v in (1, 2))
    assert any(torch.equal(values[k], variants[0, k]) for k in range(40))
    with pytest.raises(UserError, match=r"task.augment.snr_db must be \[low, high\]"):
        make_task(fsdd_dir, tmp_path / "cache", layout="frames", augment={**AUGMENT, "snr_db": [20.0, 10.0]})


def test_masks_silence_runs_of_frames_and_bands_of_coefficients(fsdd_dir, tmp_path):
    masks = {**AUGMENT, "copies": 0, "time_masks": 1, "time_mask_width": 5, "freq_masks": 2, "freq_mask_width": 3}
    task = make_task(fsdd_dir, tmp_path / "cache", layout="frames", augment=masks)
    index = torch.arange(40)
    original, masked = task.inputs["train"][index], task.train_values(7, index)
    assert torch.equal(masked, task.train_values(7, index)) and not torch.equal(masked, task.train_values(8, index))
    kept = masked == original
    assert torch.all(kept | (masked == 0))  # a value is kept or silenced, never changed
    dropped = original.ne(0) & ~kept
    frames_hit = dropped.all(-1).sum(-1)  # whole frames silenced per example
    assert frames_hit.max() <= 5 and frames_hit.sum() > 0
    bands_hit = dropped.all(1).sum(-1)  # whole coefficients silenced per example
    assert bands_hit.max() <= 6 and bands_hit.sum() > 0


def test_stretching_spreads_a_recordings_own_frames_over_every_step():
    frames = torch.arange(8.0)[None, :, None].repeat(2, 1, 3)  # frame t holds t
    out = speech.stretched(frames, torch.tensor([300, 1024]), 1024)  # 300 of 1024 samples: the first 3 of 8 frames
    assert torch.allclose(out[0, :, 0], torch.linspace(0, 2, 8)) and torch.equal(out[1], frames[1])


def test_on_off_scaling_codes_each_polarity_of_the_standardised_value(fsdd_dir, tmp_path):
    minmax = make_task(fsdd_dir, tmp_path / "cache", layout="frames")
    task = make_task(fsdd_dir, tmp_path / "cache", layout="frames", scaling="on_off")
    assert task.input_size == 2 * minmax.input_size == 26
    train = task.inputs["train"]
    on, off = train[..., :13], train[..., 13:]
    assert torch.all((on == 0) | (off == 0))  # a value is above or below the training mean, never both
    raw = minmax.inputs["train"] * minmax.scale + minmax.low  # the features before scaling
    z = (raw - raw.flatten(0, 1).mean(0)) / (2 * raw.flatten(0, 1).std(0))
    assert torch.allclose(on - off, z.clamp(-1, 1), atol=1e-4)
    assert 0.05 < train.mean() < 0.35  # a sparse code
    padded = make_task(fsdd_dir, tmp_path / "cache", layout="frames", num_samples=4096)  # 2,000 samples of sound, then zeros
    stretched_task = make_task(fsdd_dir, tmp_path / "cache", layout="frames", num_samples=4096, stretch=True)
    assert stretched_task.inputs["train"].shape == padded.inputs["train"].shape
    # the last frames: the same silence in every padded recording, sound in every stretched one
    assert padded.inputs["train"][:, -3:].std(0).max() < 1e-2 < stretched_task.inputs["train"][:, -3:].std(0).max()
    with pytest.raises(UserError, match="task.stretch=true works on a recording's frames: set task.layout=frames"):
        make_task(fsdd_dir, tmp_path / "cache", stretch=True)


def test_speaker_cmvn_uses_each_speakers_own_frames_and_keeps_each_words_spectrum(fsdd_dir, tmp_path):
    task = make_task(fsdd_dir, tmp_path / "cache", layout="frames", normalise="speaker_cmvn", num_samples=1024)
    generator = torch.Generator().manual_seed(0)
    words = torch.randn(2, 1, 3, generator=generator).repeat(2, 1, 1)  # two words' average spectra, said by both speakers
    features = words + 0.05 * torch.randn(4, 8, 3, generator=generator)
    features[2:] = 5 * features[2:] + 7  # the second speaker: another microphone
    features[:, 4:] = -20.0  # padding: recordings of 512 of 1,024 samples fill the first 4 of 8 frames
    out = task.arrange(features, torch.tensor([512, 512, 512, 512]), ["a", "a", "b", "b"])
    for rows in (slice(0, 2), slice(2, 4)):
        voiced = out[rows, :4].flatten(0, 1)
        assert torch.allclose(voiced.mean(0), torch.zeros(3), atol=1e-5) and torch.allclose(voiced.std(0), torch.ones(3), atol=1e-5)
    # the words still differ within a speaker (per-recording CMN would make both means 0), and alike for both speakers
    assert torch.allclose(out[:2, :4].mean(1), out[2:, :4].mean(1), atol=0.1)
    assert (out[0, :4].mean(0) - out[1, :4].mean(0)).abs().max() > 0.5


def test_speaker_heq_maps_each_speakers_frames_to_a_standard_normal_whatever_their_shape(fsdd_dir, tmp_path):
    task = make_task(fsdd_dir, tmp_path / "cache", layout="frames", normalise="speaker_heq", num_samples=1024)
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(3, 8, 2, generator=generator)
    second = torch.exp(2 * first) + 3  # the same recordings through another, nonlinear, channel
    features = torch.cat([first, second])
    features[:, 4:] = -20.0  # padding after the first 4 of 8 frames: outside each speaker's voiced frames
    out = task.arrange(features, torch.tensor([512] * 6), ["a"] * 3 + ["b"] * 3)
    # a monotone change of a speaker's coefficients changes nothing: the ranks are the same
    assert torch.allclose(out[:3], out[3:], atol=1e-6)
    voiced = out[:3, :4].flatten(0, 1)  # 12 frames: mid-ranks (r + 1/2) / 12 of N(0, 1)
    expected = torch.distributions.Normal(0.0, 1.0).icdf((torch.arange(12) + 0.5) / 12)
    assert torch.allclose(voiced.sort(0).values, expected[:, None].expand(12, 2), atol=1e-5)
    assert torch.equal(voiced.argsort(0), first[:, :4].flatten(0, 1).argsort(0))  # order kept within a coefficient
    # padding, below every voiced value, sits half a rank below the lowest
    assert torch.allclose(out[:, 4:], torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 / 12)), atol=1e-5)
    speaker_cmvn = make_task(fsdd_dir, tmp_path / "cache", layout="frames", normalise="speaker_cmvn", num_samples=1024)
    cmvn = speaker_cmvn.arrange(features, torch.tensor([512] * 6), ["a"] * 3 + ["b"] * 3)
    assert not torch.allclose(cmvn[:3, :4], cmvn[3:, :4], atol=0.1)  # mean and spread alone do not undo the channel


def test_deltas_append_each_coefficients_slope_and_curvature_over_five_frames(fsdd_dir, tmp_path):
    task = make_task(fsdd_dir, tmp_path / "cache", layout="frames", deltas=2, num_samples=1024)
    t = torch.arange(12.0)
    features = torch.stack([3 * t + 1, t**2, torch.full((12,), 5.0)], -1)[None]  # [1, 12 frames, 3]: a ramp, a parabola, a constant
    out = task.arrange(features, torch.tensor([1024]), ["a"])
    assert out.shape == (1, 12, 9) and torch.equal(out[..., :3], features)
    slope, curvature = out[0, :, 3:6], out[0, :, 6:]
    # away from the edges (edge frames repeated) the 5-frame regression is exact: d(3t + 1) = 3, d(t^2) = 2t, d(5) = 0
    assert torch.allclose(slope[2:10, 0], torch.full((8,), 3.0)) and torch.allclose(slope[2:10, 1], 2 * t[2:10])
    assert torch.equal(slope[:, 2], torch.zeros(12)) and torch.allclose(curvature[4:8, 1], torch.full((4,), 2.0))
    assert not torch.allclose(slope[0, 1], 2 * t[0])  # the first frame's slope sees the repeated edge
    # a speaker's constant offset (another microphone's gain) leaves the derivatives unchanged
    assert torch.allclose(task.arrange(features + 7.0, torch.tensor([1024]), ["a"])[..., 3:], out[..., 3:])
    assert make_task(fsdd_dir, tmp_path / "cache", layout="frames", deltas=1, num_samples=1024).input_size == 2 * task.input_size / 3
    with pytest.raises(UserError, match="task.deltas=1 works on a recording's frames: set task.layout=frames"):
        make_task(fsdd_dir, tmp_path / "cache", deltas=1)
    with pytest.raises(UserError, match=r"task.deltas must be 0, 1 \(first derivatives\) or 2 \(and second\), got 3"):
        make_task(fsdd_dir, tmp_path / "cache", layout="frames", deltas=3)

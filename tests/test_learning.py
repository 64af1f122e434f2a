"""Every task family learns: a small spiking LSTM, trained by `snnlstm train` on a small
learnable dataset the test makes and scored by `snnlstm evaluate`, ends far from chance.

A model that does not learn (a sign flipped in a gradient, a readout that ignores the
network, labels shuffled against their inputs) fails these, whatever else passes.
"""

from __future__ import annotations

import math
from pathlib import Path

from conftest import TINY, run_verb, write_texts, write_tiny_fsdd, write_tiny_idx

SMALL = ["model.hidden_size=32", "tracking=none", "run_name=learns", "trainer.progress=false"]


def trained_and_scored(tmp_path: Path, data_dir: Path, overrides: list[str]) -> dict[str, float]:
    """The test metrics `snnlstm evaluate` prints for the last.pt of a run with these overrides."""
    run_dir = tmp_path / "runs"
    trained = run_verb(["train", f"paths.data_dir={data_dir}", f"paths.run_dir={run_dir}", *SMALL, *overrides], tmp_path)
    assert trained.code == 0, trained.stderr[-3000:]
    (checkpoint,) = run_dir.glob("*/learns/last.pt")
    scored = run_verb(["evaluate", f"ckpt={checkpoint}", f"paths.data_dir={data_dir}", "tracking=none"], tmp_path)
    assert scored.code == 0, scored.stderr[-3000:]
    return {key: float(value) for key, value in (line.split("=", 1) for line in scored.stdout.split())}


def test_an_image_model_learns_which_row_is_bright(tmp_path):
    """Ten classes, each a bright vertical band at its own column in noise, read row by
    row as rate-coded spikes (chance: 10%)."""
    data = tmp_path / "data"
    write_tiny_idx(data / "tiny", train=640, test=200, vertical=True)
    metrics = trained_and_scored(tmp_path, data, ["task=smnist", *TINY["image"], "trainer.steps=100",
                                                  "trainer.batch_size=32", "optimizer.lr=1e-2", "trainer.eval_every=100"])
    assert metrics["test/acc"] >= 0.8, metrics


def test_a_language_model_learns_a_repeated_sentence(tmp_path):
    """Each character of a repeated sentence follows from the ones before it: a model that
    learned it has a perplexity near 1, far below the vocabulary's size (uniform guessing)
    and the unigram frequencies' (about 16 here)."""
    sentence = "the quick brown fox jumps over the lazy dog.\n"
    data = write_texts(tmp_path / "data", body=sentence * 150)
    vocabulary = len(set(sentence.upper()))
    unigram = math.exp(-sum(sentence.count(c) / len(sentence) * math.log(sentence.count(c) / len(sentence))
                            for c in set(sentence)))
    metrics = trained_and_scored(tmp_path, data, ["task=char_lm", "text=alice", "task.split=full", "task.bptt=20",
                                                  "trainer.steps=150", "trainer.batch_size=8", "optimizer.lr=1e-2",
                                                  "trainer.eval_every=150"])
    assert metrics["test/perplexity"] < 3 < unigram < vocabulary, (metrics, unigram, vocabulary)


def test_a_speech_model_tells_the_digits_apart(tmp_path):
    """Ten digits, each a tone of its own pitch spoken by two voices, as scattering frames (chance: 10%)."""
    data = write_tiny_fsdd(tmp_path / "data", indices=(0, 1, 5, 6, 7, 8, 45))
    metrics = trained_and_scored(tmp_path, data, ["task=fsdd", *TINY["speech"], f"paths.cache_dir={tmp_path / 'cache'}",
                                                  "task.layout=frames", "trainer.steps=200", "trainer.batch_size=16",
                                                  "optimizer.lr=1e-2", "trainer.eval_every=200"])
    assert metrics["test/acc"] >= 0.8, metrics

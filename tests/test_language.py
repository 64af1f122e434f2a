"""Language tasks on small texts that the tests write: splits, vocabularies,
perplexity against a hand-checked value, truncated BPTT state carry, generation."""

import math

import pytest
import torch
from torch import nn

from snn_lstm.data.text import UNKNOWN, Vocabulary, gutenberg_body, load_text, words
from snn_lstm.errors import UserError
from snn_lstm.tasks import build_task

from conftest import TINY_BODY, snnlstm, write_texts

BODY = TINY_BODY


def lm_cfg(**changes):
    cfg = {"name": "char_lm", "kind": "language", "level": "char", "text": "alice", "split": "full", "readout": "sequence",
           "hidden_size": 16, "bptt": 10, "val_fraction": 0.1, "vector_size": 8, "w2v_window": 5, "w2v_epochs": 2,
           "samples": 1, "sample_length": 20}
    return {**cfg, **changes}


def test_gutenberg_body_and_splits(tmp_path):
    write_texts(tmp_path)
    splits = load_text("alice", "full", tmp_path)
    assert "gutenberg" not in splits.train + splits.test and "licence" not in splits.train + splits.test
    body = BODY.rstrip("\n")
    assert splits.train + splits.test == body and len(splits.train) == int(0.9 * len(body))
    assert splits.train == splits.train.lower()
    with pytest.raises(UserError, match="fewer than the paper's 64,000"):
        load_text("alice", "paper", tmp_path)
    with pytest.raises(UserError, match="START OF"):
        gutenberg_body("no markers here", tmp_path / "x.txt")


def test_wikitext_paper_split_uses_the_excerpt_and_12000_test_characters(tmp_path):
    write_texts(tmp_path)
    splits = load_text("wikitext2", "paper", tmp_path)
    assert "game" in splits.train and "story" in splits.test and len(splits.test) == min(12000, len(splits.test))


def test_missing_texts_are_fetched_from_their_sources_or_named_offline(tmp_path, monkeypatch):
    import io
    import urllib.request

    import snn_lstm.data.text as text

    train = ("= game =\n" + "the story of a game .\n" * 4000).encode()
    served = {text.ALICE_URL: ("*** START OF X\n" + BODY + "*** END OF X\n").encode(),
              text.WIKITEXT_URL + "train.txt": train, text.WIKITEXT_URL + "test.txt": b"a test story .\n"}
    asked = []

    def urlopen(url, timeout):
        asked.append(url)
        return io.BytesIO(served[url])

    with pytest.raises(UserError, match="alice.txt is missing and cannot be downloaded here"):
        load_text("alice", "full", tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("SNNLSTM_OFFLINE")
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    assert load_text("alice", "full", tmp_path).train.startswith(BODY[:20].lower())
    splits = load_text("wikitext2", "paper", tmp_path)
    assert splits.train == train[: text.WIKITEXT_EXCERPT_BYTES].decode().lower() and splits.test == "a test story .\n"
    load_text("wikitext2", "paper", tmp_path)  # now from the copies
    assert sorted(asked) == sorted(served)


def test_empty_and_binary_texts_are_clear_errors(tmp_path):
    write_texts(tmp_path, body="")
    (tmp_path / "text" / "alice.txt").write_text("")
    with pytest.raises(UserError, match="empty"):
        load_text("alice", "full", tmp_path)
    (tmp_path / "text" / "alice.txt").write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(UserError, match="not a text file"):
        load_text("alice", "full", tmp_path)


def test_vocabulary_from_training_text_only(tmp_path):
    vocab = Vocabulary.from_tokens(list("abca"))
    assert vocab.symbols == ["a", "b", "c", UNKNOWN]  # by frequency, then the unknown symbol
    assert vocab.encode(list("abz")) == [0, 1, vocab.unknown]
    assert words("alice's cat, 12 <unk> .") == ["alice's", "cat", ",", "12", "<unk>", "."]
    write_texts(tmp_path)
    task = build_task(lm_cfg(), encoder="bernoulli", data_dir=tmp_path, seed=0, eval_limit=None)
    train_symbols = set(task.vocab.decode(task.ids["train"].tolist()))
    assert set(task.vocab.symbols) == train_symbols | {UNKNOWN}
    assert task.input_size == task.output_size == len(task.vocab)


class Uniform(nn.Module):
    """Predicts every symbol with the same probability: perplexity = vocabulary size."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def forward(self, x, state=None):
        return torch.zeros(x.shape[0], x.shape[1], self.size), (torch.zeros(1), torch.zeros(1))


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tmp_path):
    write_texts(tmp_path)
    task = build_task(lm_cfg(), encoder="bernoulli", data_dir=tmp_path, seed=0, eval_limit=None)
    metrics = task.evaluate(Uniform(len(task.vocab)), "test", torch.device("cpu"))
    assert metrics["perplexity"] == pytest.approx(len(task.vocab), rel=1e-6)
    assert metrics["bpc"] == pytest.approx(math.log2(len(task.vocab)), rel=1e-6)


def test_perplexity_of_a_skewed_model_matches_the_hand_computed_value(tmp_path):
    write_texts(tmp_path)
    task = build_task(lm_cfg(), encoder="bernoulli", data_dir=tmp_path, seed=0, eval_limit=None)
    size = len(task.vocab)

    targets = task.ids["test"][1:]
    favourite = int(targets.mode().values)

    class Favours(Uniform):  # logit ln 3 on one token: p(it) = 3 / (V + 2), p(any other) = 1 / (V + 2)
        def forward(self, x, state=None):
            logits, state = super().forward(x, state)
            logits[..., favourite] = math.log(3.0)
            return logits, state

    hits = int((targets == favourite).sum())
    nll = (hits * math.log((size + 2) / 3) + (len(targets) - hits) * math.log(size + 2)) / len(targets)
    metrics = task.evaluate(Favours(size), "test", torch.device("cpu"))
    assert hits > 0
    assert metrics["perplexity"] == pytest.approx(math.exp(nll), rel=1e-6)


def test_every_test_token_after_the_first_is_predicted_once(tmp_path):
    write_texts(tmp_path)
    task = build_task(lm_cfg(bptt=7), encoder="bernoulli", data_dir=tmp_path, seed=0, eval_limit=None)
    seen = []

    class Recorder(Uniform):
        def forward(self, x, state=None):
            seen.append((x.shape[1], state is None))
            return super().forward(x, state)

    task.evaluate(Recorder(len(task.vocab)), "test", torch.device("cpu"))
    assert sum(n for n, _ in seen) == len(task.ids["test"]) - 1
    assert [fresh for _, fresh in seen] == [True] + [False] * (len(seen) - 1)  # one stream, state carried


def test_tbptt_windows_continue_each_stream(tmp_path):
    write_texts(tmp_path)
    task = build_task(lm_cfg(bptt=5), encoder="bernoulli", data_dir=tmp_path, seed=0, eval_limit=None)
    windows = task.windows_per_pass(4)
    x0, y0 = task.train_batch(0, 4)
    x1, _ = task.train_batch(1, 4)
    assert torch.equal(x0[:, 1:], task.embed(y0[:, :-1]))  # targets are the next tokens
    assert torch.equal(x1[:, 0], task.embed(y0[:, -1]))  # window 1 starts where window 0 ended
    assert [task.starts_fresh(s, 4) for s in (0, 1, windows - 1, windows, windows + 1)] == [True, False, False, True, False]
    assert torch.equal(task.train_batch(windows, 4)[0], x0)  # the next pass starts over


def test_word_task_uses_word_vectors(tmp_path):
    write_texts(tmp_path)
    cache = tmp_path / "cache"
    task = build_task(lm_cfg(name="word_lm", level="word", bptt=4), encoder="identity", data_dir=tmp_path, seed=0,
                      eval_limit=None, cache_dir=str(cache))
    assert task.input_size == 8 and task.vectors.shape == (len(task.vocab), 8)
    assert len(list(cache.glob("word2vec/*.npz"))) == 1
    again = build_task(lm_cfg(name="word_lm", level="word", bptt=4), encoder="identity", data_dir=tmp_path, seed=0,
                       eval_limit=None, cache_dir=str(cache))
    assert torch.equal(again.vectors, task.vectors)  # read back from the cache


SMOKE = ["task=char_lm", "task.split=full", "task.bptt=10", "task.sample_length=20", "model.hidden_size=16",
         "trainer=smoke", "trainer.batch_size=4"]


def test_resume_with_carried_state_matches_an_uninterrupted_run(tmp_path, cli_env):
    data = write_texts(tmp_path / "data")
    common = [*SMOKE, f"paths.data_dir={data}", f"paths.run_dir={tmp_path / 'runs'}", "tracking=none",
              "trainer.eval_every=3", "model.cell_grad=surrogate"]
    snnlstm(["train", *common, "trainer.steps=6", "run_name=straight"], tmp_path, cli_env)
    snnlstm(["train", *common, "trainer.steps=3", "run_name=stopped"], tmp_path, cli_env)
    snnlstm(["train", *common, "trainer.steps=6", "run_name=stopped", "resume=true"], tmp_path, cli_env)
    straight = torch.load(tmp_path / "runs/char_lm/straight/last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "runs/char_lm/stopped/last.pt", weights_only=True)
    assert straight["carry"] is not None
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name


def test_generate_from_a_checkpoint(tmp_path, cli_env):
    data = write_texts(tmp_path / "data")
    run_dir = tmp_path / "runs"
    snnlstm(["train", *SMOKE, f"paths.data_dir={data}", f"paths.run_dir={run_dir}", "tracking=none", "run_name=lm"],
            tmp_path, cli_env)
    samples = (run_dir / "char_lm/lm/samples.txt").read_text()
    assert samples.startswith("--- temperature 0.5\n")
    out = snnlstm(["generate", f"ckpt={run_dir / 'char_lm/lm/last.pt'}", "prompt=Alice was", "length=25",
                   "temperature=0.7", f"paths.run_dir={run_dir}"], tmp_path, cli_env).stdout
    text = out[:-1]  # stdout holds the text alone, and a final newline
    assert text.startswith("alice was") and len(text) == len("alice was") + 25
    again = snnlstm(["generate", f"ckpt={run_dir / 'char_lm/lm/last.pt'}", "prompt=Alice was", "length=25",
                     "temperature=0.7", f"paths.run_dir={run_dir}"], tmp_path, cli_env).stdout
    assert again == out  # seeded
    greedy = snnlstm(["generate", f"ckpt={run_dir / 'char_lm/lm/last.pt'}", "prompt=Alice", "length=5", "temperature=0",
                      f"paths.run_dir={run_dir}"], tmp_path, cli_env).stdout
    assert greedy.strip().startswith("alice")


def test_generate_refuses_a_non_language_checkpoint(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    snnlstm(["train", "trainer=smoke", "task.seq_len=5", "model.hidden_size=4", f"paths.run_dir={run_dir}",
             "tracking=none", "run_name=s"], tmp_path, cli_env)
    result = snnlstm(["generate", f"ckpt={run_dir / 'sine/s/last.pt'}", f"paths.run_dir={run_dir}"], tmp_path, cli_env,
                     check=False)
    assert result.returncode == 2 and "not a language model checkpoint" in result.stderr

"""Character- and word-level language models (paper section 4.4, Tables 3 and 4).

Input at step t is token x_t, target x_{t+1}; softmax over the vocabulary at every
step (readout "sequence"), loss cross-entropy.
    char_lm  one-hot characters (already spikes)
    word_lm  100-d word2vec vectors trained on the training text (window 5),
             fed as real values (use encoder=identity)

Training: truncated backpropagation through time. The training text is cut into
`batch_size` parallel streams; step s trains on window s mod W of every stream
(`bptt` tokens) and starts from the state the previous window ended in, except at
the first window of each pass over the text.

Evaluation: one stream over the whole split, state carried across windows, every
token after the first predicted exactly once:
    perplexity = exp(mean NLL),   bits per token = mean NLL / ln 2.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snn_lstm.data.text import Vocabulary, load_text, words
from snn_lstm.encoders import SPLIT_STREAMS, TRAIN, make_generator
from snn_lstm.errors import UserError
from snn_lstm.tasks.base import Task

log = logging.getLogger("snnlstm.language")
LEVELS = ("char", "word")


class LanguageModelTask(Task):
    monitor = "perplexity"
    monitor_mode = "min"
    carries_state = True

    def __init__(self, cfg: dict[str, Any], encoder, seed: int, eval_limit: int | None, data_dir: str, cache_dir: str):
        level = cfg["level"]
        if level not in LEVELS:
            raise UserError(f"task.level must be char or word, got '{level}'")
        if cfg["bptt"] <= 0:
            raise UserError(f"task.bptt must be a positive integer, got {cfg['bptt']}")
        if not 0 < cfg["val_fraction"] < 0.5:
            raise UserError(f"task.val_fraction must lie in (0, 0.5), got {cfg['val_fraction']}")
        self.cfg, self.encoder, self.seed, self.level = cfg, encoder, seed, level
        self.readout = cfg["readout"]
        texts = load_text(cfg["text"], cfg["split"], data_dir)
        tokenize = list if level == "char" else words
        train_tokens, test_tokens = tokenize(texts.train), tokenize(texts.test)
        cut = int(len(train_tokens) * (1 - cfg["val_fraction"]))
        self.vocab = Vocabulary.from_tokens(train_tokens[:cut])
        self.ids = {
            "train": torch.tensor(self.vocab.encode(train_tokens[:cut])),
            "val": torch.tensor(self.vocab.encode(train_tokens[cut:])),
            "test": torch.tensor(self.vocab.encode(test_tokens)),
        }
        for split, ids in self.ids.items():
            if len(ids) < 2:  # a model predicts token t + 1 from token t
                raise UserError(f"the {split} split of the {cfg['text']} text holds {len(ids)} {level} token(s), fewer than "
                                "2: use a longer text (task.split=full) or change task.val_fraction")
        if eval_limit is not None:
            for split in ("val", "test"):
                self.ids[split] = self.ids[split][: eval_limit + 1]
        self.output_size = len(self.vocab)
        if level == "char":
            self.vectors = None
            self.input_size = len(self.vocab)
        else:
            self.vectors = word_vectors(train_tokens[:cut], self.vocab, cfg, seed, Path(cache_dir))
            self.input_size = self.vectors.shape[1]

    # ------------------------------------------------------------ inputs
    def embed(self, ids: Tensor) -> Tensor:
        """Token ids [..., T] -> inputs [..., T, I]: one-hot or word vectors."""
        if self.vectors is None:
            return F.one_hot(ids, len(self.vocab)).float()
        return self.vectors[ids]

    def windows_per_pass(self, batch_size: int) -> int:
        length = len(self.ids["train"]) // batch_size
        windows = (length - 1) // self.cfg["bptt"]
        if windows == 0:
            raise UserError(
                f"the training text ({len(self.ids['train'])} tokens) is too short for batch_size {batch_size} "
                f"x bptt {self.cfg['bptt']}: lower trainer.batch_size or task.bptt"
            )
        return windows

    def train_batch(self, step: int, batch_size: int) -> tuple[Tensor, Tensor]:
        window = step % self.windows_per_pass(batch_size)
        streams = self.ids["train"][: (len(self.ids["train"]) // batch_size) * batch_size].view(batch_size, -1)
        start, bptt = window * self.cfg["bptt"], self.cfg["bptt"]
        x = streams[:, start : start + bptt]
        y = streams[:, start + 1 : start + bptt + 1]
        return self.encoder(self.embed(x), make_generator(self.seed, TRAIN, step)), y

    def starts_fresh(self, step: int, batch_size: int) -> bool:
        """Whether step `step` begins a pass over the text (no state carried in)."""
        return step % self.windows_per_pass(batch_size) == 0

    def steps_for_epochs(self, epochs: float, batch_size: int) -> int:
        return math.ceil(epochs * self.windows_per_pass(batch_size))

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        ids = self.ids[split]
        nll, state, bptt = 0.0, None, self.cfg["bptt"]
        for start in range(0, len(ids) - 1, bptt):
            x = ids[start : start + bptt].unsqueeze(0)
            y = ids[start + 1 : start + bptt + 1].unsqueeze(0)
            x = x[:, : y.shape[1]]
            inputs = self.encoder(self.embed(x), make_generator(0, SPLIT_STREAMS[split], start)).to(device)
            logits, state = model(inputs, state)
            nll += F.cross_entropy(logits[0], y[0].to(device), reduction="sum").item()
        mean = nll / (len(ids) - 1)
        unit = "bpc" if self.level == "char" else "bits_per_word"
        return {"loss": mean, "perplexity": math.exp(mean), unit: mean / math.log(2)}

    # ------------------------------------------------------------ artifacts
    def write_artifacts(self, model: nn.Module, folder: Path) -> list[Path]:
        """samples.txt: text sampled from the trained model, each sample prompted
        with the opening of the test text."""
        from snn_lstm.generate import detokenize, sample_text

        opening = detokenize(self.vocab.decode(self.ids["test"][: 20 if self.level == "char" else 5].tolist()), self.level)
        samples = [
            sample_text(model, self.state_dict(), self.encoder, opening, self.cfg["sample_length"], temperature, seed)
            for seed, temperature in enumerate([0.5, 0.8, 1.0][: self.cfg["samples"]])
        ]
        path = folder / "samples.txt"
        path.write_text("\n\n".join(f"--- temperature {t}\n{s}" for t, s in zip([0.5, 0.8, 1.0], samples)) + "\n")
        return [path]

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """What generation needs without the data: the vocabulary and the input vectors."""
        return {"level": self.level, "symbols": self.vocab.symbols, "vectors": self.vectors}


def word_vectors(tokens: list[str], vocab: Vocabulary, cfg: dict, seed: int, cache_dir: Path) -> Tensor:
    """word2vec (skip-gram, gensim) on the training tokens, one row per vocabulary
    symbol; the unknown symbol gets the mean vector if training never saw it.
    Cached on disk, keyed by the tokens and the settings."""
    size, window, epochs = cfg["vector_size"], cfg["w2v_window"], cfg["w2v_epochs"]
    key = hashlib.sha256("\x1f".join([*tokens, str(size), str(window), str(epochs), str(seed)]).encode()).hexdigest()[:16]
    path = cache_dir / "word2vec" / f"{key}.npz"
    if path.is_file():
        cached = np.load(path, allow_pickle=False)
        if list(cached["symbols"]) == vocab.symbols:
            return torch.from_numpy(cached["vectors"])
    from gensim.models import Word2Vec

    log.info("training %d-d word vectors on %d tokens (cached in %s)", size, len(tokens), path)
    # gensim takes sentences of at most 10,000 tokens; the text is one long sentence
    sentences = [tokens[k : k + 1000] for k in range(0, len(tokens), 1000)]
    model = Word2Vec(sentences, vector_size=size, window=window, min_count=1, sg=1, workers=1, seed=seed, epochs=epochs,
                     hashfxn=_stable_hash)
    known = [s for s in vocab.symbols if s in model.wv]
    mean = np.mean([model.wv[s] for s in known], axis=0)
    vectors = np.stack([model.wv[s] if s in model.wv else mean for s in vocab.symbols]).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, vectors=vectors, symbols=np.array(vocab.symbols))
    tmp.replace(path)
    return torch.from_numpy(vectors)


def _stable_hash(text: str) -> int:
    """gensim seeds each word's initial vector from a hash of the word; Python's own
    str hash changes from process to process, this one does not."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little")


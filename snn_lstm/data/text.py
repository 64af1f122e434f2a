"""The texts of the paper's language-model experiments (section 4.4), their
splits and vocabularies.

    alice      "Alice's Adventures in Wonderland" (Project Gutenberg #11): the body text
               between the `*** START OF` and `*** END OF` lines, lower-cased.
               paper split: characters [0, 52000) train, [52000, 64000) test;
               full: the first 90% train, the rest test.
    wikitext2  WikiText-2 (tokenised, with <unk>), lower-cased.
               paper split: the 52,546-byte excerpt of the training split that the
               authors used, and the first 12,000 characters of the test split;
               full: the official train and test splits.

A missing file is downloaded from its public source when a network exists
(Alice from Project Gutenberg, WikiText-2 from pytorch/examples).

Vocabularies are built from the training text alone; whatever the test text adds
maps to an unknown symbol.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from snn_lstm.data.idx import download, offline
from snn_lstm.errors import UserError

log = logging.getLogger("snnlstm.data")

TEXTS = ("alice", "wikitext2")
SPLITS = ("paper", "full")
UNKNOWN = "<unk>"
PAPER_TRAIN_CHARS, PAPER_TEST_CHARS = 52000, 12000
ALICE_URL = "https://www.gutenberg.org/cache/epub/11/pg11.txt"
WIKITEXT_URL = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/"
WIKITEXT_EXCERPT_BYTES = 52546


@dataclass(frozen=True)
class TextSplits:
    train: str
    test: str


def _read(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"{path} is missing: put the file there or set paths.data_dir to the folder that holds text/")
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise UserError(f"{path} is not a text file (it holds NUL bytes): replace it with the plain text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): replace it")
    if not text.strip():
        raise UserError(f"{path} is empty: replace it with the text")
    return text


def gutenberg_body(text: str, path: Path) -> str:
    """The lines strictly between `*** START OF ...` and `*** END OF ...`."""
    lines = text.split("\n")
    starts = [k for k, line in enumerate(lines) if line.startswith("*** START OF")]
    ends = [k for k, line in enumerate(lines) if line.startswith("*** END OF")]
    if not starts or not ends or ends[0] <= starts[0]:
        raise UserError(f"{path} has no '*** START OF' / '*** END OF' lines: use the Project Gutenberg text")
    return "\n".join(lines[starts[0] + 1 : ends[0]])


def load_text(name: str, split: str, data_dir: str | Path) -> TextSplits:
    if name not in TEXTS:
        raise UserError(f"unknown text '{name}': choose one of {', '.join(TEXTS)}")
    if split not in SPLITS:
        raise UserError(f"task.split must be one of {', '.join(SPLITS)}, got '{split}'")
    folder = Path(data_dir) / "text"
    if name == "alice":
        path = _local_or_fetched(folder / "alice.txt", ALICE_URL)
        body = gutenberg_body(_read(path), path).lower()
        if split == "paper":
            if len(body) < PAPER_TRAIN_CHARS + PAPER_TEST_CHARS:
                raise UserError(f"{path} has {len(body)} body characters, fewer than the paper's 64,000")
            return TextSplits(body[:PAPER_TRAIN_CHARS], body[PAPER_TRAIN_CHARS : PAPER_TRAIN_CHARS + PAPER_TEST_CHARS])
        cut = int(0.9 * len(body))
        return TextSplits(body[:cut], body[cut:])
    wiki = folder / "wikitext-2"
    test = _read(_local_or_fetched(wiki / "wiki.test.tokens", WIKITEXT_URL + "test.txt")).lower()
    if split == "paper":
        return TextSplits(_read(_wikitext_excerpt(wiki)).lower(), test[:PAPER_TEST_CHARS])
    return TextSplits(_read(_local_or_fetched(wiki / "wiki.train.tokens", WIKITEXT_URL + "train.txt")).lower(), test)


def _wikitext_excerpt(folder: Path) -> Path:
    """The authors' training text: the first 52,546 bytes of WikiText-2's training split."""
    path = folder / "wiki.train.excerpt.tokens"
    if not path.is_file():
        train = _local_or_fetched(folder / "wiki.train.tokens", WIKITEXT_URL + "train.txt")
        path.write_bytes(train.read_bytes()[:WIKITEXT_EXCERPT_BYTES])
    return path


def _local_or_fetched(path: Path, url: str) -> Path:
    """`path` if it exists, else downloaded from `url` (its public source) into `path`."""
    if path.is_file():
        return path
    if offline():
        raise UserError(f"{path} is missing and cannot be downloaded here: put the file there or set paths.data_dir")
    try:
        download(url, path)
    except OSError as error:
        raise UserError(f"{path} is missing and downloading it from {url} failed ({error}): put the file there")
    return path


WORD_PATTERN = re.compile(r"<unk>|[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    """Lower-cased text -> word tokens: words (with an inner apostrophe: "don't"),
    numbers, WikiText's <unk>, and each other non-space symbol on its own."""
    return WORD_PATTERN.findall(text)


class Vocabulary:
    """Symbols of the training text, most frequent first, then the unknown symbol.

    Stored in checkpoints as the plain list `symbols`."""

    def __init__(self, symbols: list[str]):
        if UNKNOWN not in symbols:
            symbols = [*symbols, UNKNOWN]
        self.symbols = list(symbols)
        self.index = {s: k for k, s in enumerate(self.symbols)}
        self.unknown = self.index[UNKNOWN]

    @classmethod
    def from_tokens(cls, tokens) -> "Vocabulary":
        counts = Counter(tokens)
        return cls(sorted(counts, key=lambda s: (-counts[s], s)))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, tokens) -> list[int]:
        return [self.index.get(t, self.unknown) for t in tokens]

    def decode(self, ids) -> list[str]:
        return [self.symbols[k] for k in ids]

"""Typed schema of every config group, the domain of every option, the run-folder
resolvers and the allow-list of what configs may instantiate.

Each YAML option in ``conf/`` extends its schema here (``schema/<group>/<name>``),
so a misspelt key or a wrong type fails while Hydra composes the config. What the
types cannot say (ranges, choices, safe folder names) each schema says in its
``DOMAINS``, and ``check_options`` checks every value of a composed config against
them before a verb does any work: no float may be NaN or infinite, no string empty,
no number outside its domain.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence

import hydra.utils
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from snn_lstm.data.frontends import FRONTENDS
from snn_lstm.data.idx import EMNIST_SIZES
from snn_lstm.data.text import SPLITS, TEXTS
from snn_lstm.encoders import ENCODERS
from snn_lstm.errors import UserError
from snn_lstm.models import BACKBONES, READOUTS
from snn_lstm.spiking.fused import MATMUL_DTYPES
from snn_lstm.spiking.lstm import CELL_GRADS, CELLS, ENGINES, INITS
from snn_lstm.spiking.surrogate import DERIVATIVES
from snn_lstm.tasks import TASKS
from snn_lstm.tasks import images, language, speech

CONFIG_PATH = "pkg://snn_lstm.conf"

# The only packages a config's `_target_` may name callables from (also for configs
# read back from checkpoints or MLflow): our own and torch's optimizers/schedulers.
ALLOWED_TARGET_PREFIXES = ("snn_lstm.", "torch.optim.")


# ----------------------------------------------------------------- domains
MAX_COUNT = 2**31 - 1  # sizes, counts and steps: what a 32-bit index holds
MAX_SEED = 2**32 - 1
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass(frozen=True)
class Range:
    """Numbers from low to high (None: unbounded; an open end is excluded)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # the schema's types are OmegaConf's to check
        below = self.low is not None and (value < self.low or (self.low_open and value == self.low))
        above = self.high is not None and (value > self.high or (self.high_open and value == self.high))
        if not (below or above):
            return None
        if isinstance(value, int) and self.low in (0, 1) and not self.low_open and self.high in (MAX_COUNT, MAX_SEED):
            return f"must be a {'positive' if self.low == 1 else 'non-negative'} integer up to {self.high}"
        low, high = (f"{end:g}" if isinstance(end, float) else end for end in (self.low, self.high))
        if self.high is None:
            return f"must be {'>' if self.low_open else '>='} {low}"
        return f"must lie in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


@dataclass(frozen=True)
class Choice:
    values: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        return None if value in self.values else f"must be one of {', '.join(self.values)}"


@dataclass(frozen=True)
class Elements:
    """A list whose every element lies in `domain`, of `length` elements or at least `min_length`."""

    domain: Any
    min_length: int = 0
    length: int | None = None

    def problem(self, value: Any) -> str | None:
        if self.length is not None and len(value) != self.length:
            return f"must hold {self.length} values"
        if len(value) < self.min_length:
            return f"must hold at least {self.min_length} value{'s' if self.min_length > 1 else ''}"
        for element in value:
            problem = self.domain.problem(element)
            if problem:
                return f"{problem} (each value; {element!r} is not)"
        return None


class NotEmpty:
    @staticmethod
    def problem(value: Any) -> str | None:
        return None if len(value) else "must not be empty"


class FolderName:
    """One folder name: letters, digits, '.', '_' and '-', not starting with '.' (so
    never '..', a path or an absolute path)."""

    @staticmethod
    def problem(value: Any) -> str | None:
        if isinstance(value, str) and SAFE_NAME.match(value):
            return None
        return "must be one folder name (letters, digits, '.', '_', '-'; no '/', not starting with '.')"


def choice(values: Sequence[str]) -> Choice:
    return Choice(tuple(values))


COUNT = Range(0, MAX_COUNT)  # 0, 1, 2, ...
POSITIVE = Range(1, MAX_COUNT)  # 1, 2, ...
SEED = Range(0, MAX_SEED)
POSITIVE_REAL = Range(0.0, None, low_open=True)
NON_NEGATIVE_REAL = Range(0.0, None)
REAL = Range()  # any finite number (every float is checked for NaN and infinity)
PROBABILITY = Range(0.0, 1.0)
THRESHOLD = Range(0.0, 1.0, high_open=True)  # in [0, 1) min(s, 1) and H(s - theta1) agree on s in {0, 1, 2}
DEVICES = ("cpu", "cuda", "auto")
LR_SCHEDULES = ("constant", "cosine")
NONFINITE_POLICIES = ("stop", "skip")
TRACKING_BACKENDS = ("mlflow", "none")
REPORT_FORMATS = ("md", "html")
EXPORT_FORMATS = ("onnx", "nir")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")


# ----------------------------------------------------------------- schema
@dataclass
class DistillConfig:
    teacher: Optional[str] = None  # checkpoint of a model trained on the same data; None: learn from the labels alone
    weight: float = 0.5  # w in the training target (1 - w) one-hot(y) + w softmax(z_teacher / T)
    temperature: float = 2.0  # T
    DOMAINS: ClassVar = {"weight": PROBABILITY, "temperature": POSITIVE_REAL}


@dataclass
class SineTaskConfig:
    name: str = "sine"
    kind: str = "sine"
    readout: str = "sequence"
    seq_len: int = 100
    channels: int = 20
    dt: float = 0.1  # x advances by dt per step
    val_size: int = 256
    test_size: int = 1024
    figure_steps: List[int] = field(default_factory=lambda: [0, 5, 20, 100])
    DOMAINS: ClassVar = {"name": FolderName, "kind": choice(TASKS), "readout": choice(READOUTS), "seq_len": POSITIVE, "channels": POSITIVE, "dt": POSITIVE_REAL,
                         "val_size": POSITIVE, "test_size": POSITIVE, "figure_steps": Elements(COUNT)}


@dataclass
class ImageTaskConfig:
    name: str = MISSING  # smnist, semnist, pmnist, psmnist, ...
    kind: str = "image"
    readout: str = "last"
    dataset: str = "mnist"  # mnist, emnist or idx (any folder in MNIST's file layout)
    emnist_split: str = "balanced"
    folder: Optional[str] = None  # for dataset=idx: folder under paths.data_dir
    layout: str = "rows"  # rows, pixels or permuted_pixels
    pixels_per_step: int = 1  # pixel layouts: k pixels per step (784 / k steps)
    permutation_seed: int = 0
    val_size: int = 5000  # the last training images, held out to pick best.pt
    eval_draws: int = 1  # spike trains averaged per evaluation image (1: the paper's single draw)
    distill: DistillConfig = field(default_factory=DistillConfig)
    DOMAINS: ClassVar = {"name": FolderName, "kind": choice(TASKS), "readout": choice(READOUTS), "dataset": choice(images.DATASETS),
                         "emnist_split": choice(EMNIST_SIZES), "layout": choice(images.LAYOUTS), "pixels_per_step": POSITIVE, "permutation_seed": SEED,
                         "val_size": POSITIVE, "eval_draws": POSITIVE}


@dataclass
class LanguageTaskConfig:
    name: str = MISSING  # char_lm or word_lm
    kind: str = "language"
    level: str = "char"  # char or word
    text: str = "alice"  # alice or wikitext2
    split: str = "paper"  # paper (52,000 / 12,000 characters) or full
    readout: str = "sequence"
    bptt: int = 100  # tokens per truncated-BPTT window
    val_fraction: float = 0.05  # the end of the training text, held out to pick best.pt
    vector_size: int = 100  # word_lm: word2vec dimensions
    w2v_window: int = 5
    w2v_epochs: int = 20
    samples: int = 3  # text samples written at the end of training
    sample_length: int = 200
    DOMAINS: ClassVar = {"name": FolderName, "kind": choice(TASKS), "readout": choice(READOUTS), "level": choice(language.LEVELS), "text": choice(TEXTS),
                         "split": choice(SPLITS), "bptt": POSITIVE, "val_fraction": Range(0.0, 0.5, True, True),
                         "vector_size": POSITIVE, "w2v_window": POSITIVE, "w2v_epochs": POSITIVE, "samples": Range(0, 3),
                         "sample_length": COUNT}


@dataclass
class AugmentConfig:
    """Spoken digits' training-data augmentation (snn_lstm.data.augment); the defaults change nothing."""

    copies: int = 0  # augmented copies of every training recording (speed, tempo, pitch, noise); 0: none
    speeds: List[float] = field(default_factory=lambda: [1.0])  # speed factors, one drawn per recording and copy
    tempos: List[float] = field(default_factory=lambda: [1.0])  # tempo factors (pitch kept), one drawn likewise
    pitch_steps: List[float] = field(default_factory=lambda: [0.0])  # pitch shifts in semitones, one drawn likewise
    snr_db: Optional[List[float]] = None  # [low, high]: white noise at an SNR drawn uniformly in dB; None: no noise
    time_masks: int = 0  # masked runs of frames per training example and step
    time_mask_width: int = 0  # at most this many frames each
    freq_masks: int = 0  # masked bands of coefficients per example and step
    freq_mask_width: int = 0
    DOMAINS: ClassVar = {"copies": Range(0, 64), "speeds": Elements(Range(0.5, 2.0), min_length=1),
                         "tempos": Elements(Range(0.5, 2.0), min_length=1),
                         "pitch_steps": Elements(Range(-12.0, 12.0), min_length=1), "snr_db": Elements(Range(-20.0, 100.0), length=2),
                         "time_masks": Range(0, 16), "time_mask_width": COUNT, "freq_masks": Range(0, 16), "freq_mask_width": COUNT}


@dataclass
class SpeechTaskConfig:
    name: str = "fsdd"
    kind: str = "speech"
    readout: str = "last"  # the paper: softmax on h_T
    speakers: List[str] = field(default_factory=lambda: ["jackson", "nicolas", "theo", "yweweler"])  # the paper's 4
    test_speakers: Optional[List[str]] = None  # None: the training speakers
    held_out_speaker: Optional[str] = None  # leave one speaker out: all its recordings are the test set, the rest train
    val_from_index: int = 45  # training indices 5-49: [5, 45) train, [45, 50) validation
    num_samples: int = 8192  # every recording cut or zero-padded to this length
    layout: str = "averaged"  # averaged (the paper's: steps x C/steps) or frames (frames x C)
    steps: int = 8  # averaged layout: 336 scattering coefficients as 8 steps of 42
    stretch: bool = False  # frames layout: each recording's own frames (not its padding) interpolated to all steps
    normalise: str = "none"  # none, cmn, cmvn (per recording, over its frames), speaker_cmvn or speaker_heq, before the scaling
    deltas: int = 0  # frames layout: append the first (1) or first and second (2) time derivatives of the normalised frames
    scaling: str = "minmax"  # minmax, or on_off: standardised values as two polarities (twice the inputs)
    eval_draws: int = 1  # spike trains averaged per evaluation recording
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    frontend: Any = None  # the frontend group
    DOMAINS: ClassVar = {"name": FolderName, "kind": choice(TASKS), "readout": choice(READOUTS), "val_from_index": Range(speech.TEST_INDICES.stop + 1, speech.NUM_INDICES - 1),
                         "num_samples": POSITIVE, "layout": choice(speech.LAYOUTS), "steps": POSITIVE,
                         "normalise": choice(speech.NORMALISATIONS), "deltas": Range(0, speech.MAX_DELTAS), "scaling": choice(speech.SCALINGS), "eval_draws": POSITIVE}


@dataclass
class ScatteringConfig:
    name: str = "scattering"
    J: int = 8  # averaging scale 2^J samples
    Q: int = 12  # wavelets per octave (first order)
    log_eps: float = 1e-6
    DOMAINS: ClassVar = {"name": choice(FRONTENDS), "J": Range(1, 30), "Q": POSITIVE, "log_eps": POSITIVE_REAL}


@dataclass
class MelConfig:
    name: str = MISSING  # mfcc or logmel
    n_mfcc: int = 40  # mfcc only
    n_mels: int = 40
    n_fft: int = 256  # 32 ms at 8 kHz
    hop_length: int = 128  # 16 ms
    log_eps: float = 1e-6  # logmel only
    DOMAINS: ClassVar = {"name": choice(FRONTENDS), "n_mfcc": POSITIVE, "n_mels": POSITIVE, "n_fft": POSITIVE,
                         "hop_length": POSITIVE, "log_eps": POSITIVE_REAL}


@dataclass
class EncoderConfig:
    name: str = "bernoulli"  # bernoulli or identity
    DOMAINS: ClassVar = {"name": choice(ENCODERS)}


@dataclass
class SpikingLSTMConfig:
    """Every argument of SpikingLSTM(input_size, **this but name): the backbone's recipe in one group."""

    name: str = "slstm"
    hidden_size: int = 200
    num_layers: int = 1
    theta1: float = 0.1
    theta2: float = 0.1
    surrogate: str = "gaussian"  # family of the surrogate derivative (model/surrogate=<family> also sets the widths)
    alpha1: float = 4.0  # surrogate width for the gates i, f, o
    alpha2: float = 0.3  # surrogate width for the candidate g
    cell_grad: str = "surrogate"  # or straight_through (the authors' code)
    cell_grad_scale: float = 1.0  # gamma: dc/ds times gamma (clamp with gamma < 1: a held bit's error fades as gamma^k)
    recurrent_grad_scale: float = 1.0  # beta: the error through the recurrent spikes h_{t-1} -> a_t times beta
    cell: str = "binary"  # the paper's; leaky or graded_forget: a real-valued cell (docs/model.md)
    write_scale: float = 1.0  # w in (0, 1]: what a write adds to an analog cell (1: sets it to 1)
    decay_steps: int = 784  # the leaky cell's longest initial time scale
    init: str = "he"
    forget_bias: float = 0.0  # b_f at the start (0: the init's)
    chrono_steps: Optional[int] = None  # or T: b_f ~ log U(1, T - 1), b_i = -b_f
    engine: str = "auto"  # auto (fused: C++ on a CPU, Triton on a GPU), cpp, triton, torch (fused, any device), reference
    matmul_dtype: str = "float32"  # or tf32, bfloat16, float16: the fused engines' matrix products
    DOMAINS: ClassVar = {"name": choice(BACKBONES), "hidden_size": POSITIVE, "num_layers": POSITIVE, "theta1": THRESHOLD,
                         "theta2": THRESHOLD, "surrogate": choice(DERIVATIVES), "alpha1": POSITIVE_REAL,
                         "alpha2": POSITIVE_REAL, "cell_grad": choice(CELL_GRADS), "cell_grad_scale": POSITIVE_REAL,
                         "recurrent_grad_scale": Range(0.0, 1.0), "cell": choice(CELLS), "write_scale": Range(0.0, 1.0),
                         "decay_steps": Range(2, MAX_COUNT), "init": choice(INITS),
                         "forget_bias": REAL, "chrono_steps": Range(3, MAX_COUNT), "engine": choice(ENGINES), "matmul_dtype": choice(MATMUL_DTYPES)}


@dataclass
class LSTMConfig:
    name: str = "lstm"
    hidden_size: int = 200
    num_layers: int = 1
    forget_bias: float = 0.0  # as the spiking LSTM's
    chrono_steps: Optional[int] = None
    DOMAINS: ClassVar = {"name": choice(BACKBONES), "hidden_size": POSITIVE, "num_layers": POSITIVE,
                         "forget_bias": REAL, "chrono_steps": Range(3, MAX_COUNT)}


@dataclass
class OptimizerConfig:
    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    DOMAINS: ClassVar = {"lr": POSITIVE_REAL, "betas": Elements(Range(0.0, 1.0, high_open=True), length=2),
                         "eps": POSITIVE_REAL, "weight_decay": NON_NEGATIVE_REAL}


@dataclass
class TrainerConfig:
    steps: int = 600
    epochs: Optional[float] = None  # if set, steps = epochs * (training examples // batch_size)
    batch_size: int = 32
    eval_every: int = 100
    log_every: int = 10
    eval_limit: Optional[int] = None  # evaluate on at most this many samples per split
    grad_clip: Optional[float] = None  # max global gradient norm
    lr_schedule: str = "constant"  # constant or cosine (to zero at the last step)
    warmup_steps: int = 0  # linear warm-up of the learning rate
    on_nonfinite: str = "stop"  # a NaN/inf loss or gradient: stop (keeping the last checkpoint) or skip the batch
    device: str = "cpu"  # cpu, cuda or auto
    threads: Optional[int] = None  # torch CPU threads; None keeps torch's choice
    progress: bool = True
    DOMAINS: ClassVar = {"steps": POSITIVE, "epochs": POSITIVE_REAL, "batch_size": POSITIVE, "eval_every": POSITIVE,
                         "log_every": POSITIVE, "eval_limit": POSITIVE, "grad_clip": POSITIVE_REAL,
                         "lr_schedule": choice(LR_SCHEDULES), "warmup_steps": COUNT,
                         "on_nonfinite": choice(NONFINITE_POLICIES), "device": choice(DEVICES), "threads": Range(1, 1024)}


@dataclass
class TrackingConfig:
    backend: str = "mlflow"  # mlflow or none
    uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else sqlite in paths.run_dir
    experiment: str = "snnlstm"
    DOMAINS: ClassVar = {"backend": choice(TRACKING_BACKENDS)}


@dataclass
class PathsConfig:
    data_dir: str = "./data"
    run_dir: str = "./runs"
    cache_dir: str = "./runs/cache"  # computed features (word vectors, audio front ends)


@dataclass
class TrainConfig:
    task: Any = MISSING
    encoder: EncoderConfig = MISSING
    model: Any = MISSING
    optimizer: OptimizerConfig = MISSING
    trainer: TrainerConfig = MISSING
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING
    seed: int = 0
    resume: bool = False
    overwrite: bool = False  # start afresh in a run folder that holds another run's checkpoints, deleting them
    run_name: Optional[str] = None  # run folder name under paths.run_dir/<task>; default a timestamp
    tags: Dict[str, str] = field(default_factory=dict)  # extra MLflow tags (paper_table, row, ...)
    DOMAINS: ClassVar = {"seed": SEED, "run_name": FolderName}


@dataclass
class EvaluateConfig:
    ckpt: str = MISSING
    split: str = "test"
    draws: Optional[int] = None  # classifiers: spike trains averaged per example (None: the run's task.eval_draws)
    device: str = "cpu"
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING
    DOMAINS: ClassVar = {"draws": POSITIVE, "device": choice(DEVICES)}


@dataclass
class GenerateConfig:
    ckpt: str = MISSING
    prompt: str = "alice "
    length: int = 200
    temperature: float = 0.8
    seed: int = 0
    paths: PathsConfig = MISSING
    DOMAINS: ClassVar = {"length": COUNT, "temperature": NON_NEGATIVE_REAL, "seed": SEED}


@dataclass
class ExportConfig:
    ckpt: str = MISSING
    format: str = "onnx"  # onnx (onnxruntime) or nir (the neuromorphic exchange format)
    dtype: str = "float32"  # or float64 (spikes identical to PyTorch's to the last bit)
    paths: PathsConfig = MISSING
    DOMAINS: ClassVar = {"format": choice(EXPORT_FORMATS), "dtype": choice(("float32", "float64"))}


@dataclass
class BenchShape:
    steps: int = MISSING
    batch: int = MISSING
    input: int = MISSING
    hidden: int = MISSING
    rate: float = 0.5  # probability of an input spike
    DOMAINS: ClassVar = {"steps": POSITIVE, "batch": POSITIVE, "input": POSITIVE, "hidden": POSITIVE, "rate": PROBABILITY}


@dataclass
class BenchConfig:
    device: str = "cpu"
    threads: Optional[int] = None
    repeats: int = 10
    warmup: int = 3
    engines: List[str] = field(default_factory=lambda: ["auto"])
    matmul_dtypes: List[str] = field(default_factory=lambda: ["float32"])
    cells: List[str] = field(default_factory=lambda: ["binary"])  # model.cell of the spiking rows
    shapes: Dict[str, BenchShape] = field(default_factory=dict)
    ckpt: Optional[str] = None  # a trained model: also time its weights on its task's test inputs
    ckpt_batches: List[int] = field(default_factory=lambda: [1])  # batch sizes of those rows
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING
    DOMAINS: ClassVar = {"device": choice(DEVICES), "threads": Range(1, 1024), "repeats": POSITIVE, "warmup": COUNT,
                         "engines": Elements(choice(ENGINES), min_length=1),
                         "matmul_dtypes": Elements(choice(MATMUL_DTYPES), min_length=1), "shapes": NotEmpty,
                         "cells": Elements(choice(CELLS), min_length=1),
                         "ckpt_batches": Elements(POSITIVE, min_length=1)}


@dataclass
class ReportConfig:
    format: str = "md"  # md (a Markdown file per table) or html (one self-contained page)
    out_dir: str = "reports"
    paper_values: str = "experiments/paper_values.yaml"
    docs: List[str] = field(default_factory=list)  # Markdown files whose `<!-- snnlstm report: TABLE -->` blocks to rewrite
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING
    DOMAINS: ClassVar = {"format": choice(REPORT_FORMATS)}


@dataclass
class SearchSpaceConfig:
    name: str = MISSING
    train: List[str] = field(default_factory=list)  # `snnlstm train` overrides of every trial
    params: Dict[str, Any] = field(default_factory=dict)  # override key -> {type, low, high, log, step | choices}
    DOMAINS: ClassVar = {"name": FolderName}


@dataclass
class SearchConfig:
    space: SearchSpaceConfig = MISSING
    study: str = MISSING  # the study's name in the storage; the same name continues it
    n_trials: int = 20  # finished (complete or pruned) trials to reach
    storage: Optional[str] = None  # Optuna RDB URL; None: sqlite optuna.db in the study's folder
    sampler: str = "tpe"  # tpe or random
    pruner: str = "median"  # median or none
    pruner_startup_trials: int = 3  # trials before pruning and TPE start
    pruner_warmup_steps: int = 0  # training steps of a trial before it may be pruned
    heartbeat_s: int = 30  # a trial silent for 2 heartbeats is dead: FAIL, and retried
    seed: int = 0  # the sampler's
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING
    DOMAINS: ClassVar = {"study": FolderName, "n_trials": POSITIVE, "sampler": choice(SAMPLERS), "pruner": choice(PRUNERS),
                         "pruner_startup_trials": COUNT, "pruner_warmup_steps": COUNT, "heartbeat_s": POSITIVE, "seed": SEED}


@dataclass
class SyncConfig:
    run: str = MISSING  # the run folder holding tracking_backlog.jsonl
    tracking: TrackingConfig = MISSING


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema_train", node=TrainConfig)
    cs.store(name="schema_evaluate", node=EvaluateConfig)
    cs.store(name="schema_bench", node=BenchConfig)
    cs.store(name="schema_generate", node=GenerateConfig)
    cs.store(name="schema_export", node=ExportConfig)
    cs.store(name="schema_report", node=ReportConfig)
    cs.store(name="schema_sync", node=SyncConfig)
    cs.store(name="schema_search", node=SearchConfig)
    cs.store(group="schema/space", name="space", node=SearchSpaceConfig)
    for group, name, node in (
        ("task", "sine", SineTaskConfig),
        ("task", "image", ImageTaskConfig),
        ("task", "language", LanguageTaskConfig),
        ("task", "speech", SpeechTaskConfig),
        ("frontend", "scattering", ScatteringConfig),
        ("frontend", "mel", MelConfig),
        ("encoder", "encoder", EncoderConfig),
        ("model", "slstm", SpikingLSTMConfig),
        ("model", "lstm", LSTMConfig),
        ("optimizer", "optimizer", OptimizerConfig),
        ("trainer", "trainer", TrainerConfig),
        ("tracking", "tracking", TrackingConfig),
        ("paths", "paths", PathsConfig),
    ):
        cs.store(group=f"schema/{group}", name=name, node=node)


# ----------------------------------------------------------------- checking a config
def _universal_problem(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, str) and not value.strip():
        return "must not be empty"
    if isinstance(value, (list, tuple)):
        return next((problem for problem in map(_universal_problem, value) if problem), None)
    return None


def check_options(cfg: DictConfig, prefix: str = "") -> None:
    """Every value of a composed config against its schema's DOMAINS (None passes),
    and nowhere a float that is NaN or infinite or an empty string: one line for the
    first that fails."""
    domains = getattr(OmegaConf.get_type(cfg), "DOMAINS", {})
    for key in cfg:
        path = f"{prefix}{key}"
        value = cfg[key]
        if isinstance(value, DictConfig):
            if key in domains and domains[key].problem(value):
                raise UserError(f"{path} {domains[key].problem(value)}")
            check_options(value, f"{path}.")
            continue
        plain = to_plain(value)
        problem = _universal_problem(plain)
        if problem is None and plain is not None and key in domains:
            problem = domains[key].problem(plain)
        if problem:
            raise UserError(f"{path} {problem}, got {plain!r}")


# ----------------------------------------------------------------- run folders
CHECKPOINT_FILES = ("last.pt", "last.prev.pt", "best.pt", "best.prev.pt")
# What this command's job found in its folder before Hydra wrote anything (the first
# folder on the path that did not exist, or None; the entries there and their
# modification times), and the names it chose: every lookup gives the same answer,
# and a refused command removes exactly what it made. Reset by each verb (new_launch).
JOB_FOLDERS: dict[str, tuple[Optional[str], dict[str, int]]] = {}
LAUNCH_NAMES: dict[tuple, str] = {}


def new_launch() -> None:
    JOB_FOLDERS.clear()
    LAUNCH_NAMES.clear()


def folder_name(value: str, setting: str) -> str:
    problem = FolderName.problem(value)
    if problem:
        raise UserError(f"{setting} {problem}, got {value!r}")
    return value


def job_folder(path: str) -> str:
    """A job's folder (Hydra's run dir), refused when something that is not a folder
    stands in its way; what it holds is noted (JOB_FOLDERS)."""
    folder = Path(path).absolute()
    blocking = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise UserError(f"{blocking} is a file, not a folder: point paths.run_dir (or run_name) elsewhere")
    if str(folder) not in JOB_FOLDERS:
        if folder.exists():
            JOB_FOLDERS[str(folder)] = (None, {entry.name: entry.stat().st_mtime_ns for entry in folder.iterdir()})
        else:
            JOB_FOLDERS[str(folder)] = (str([p for p in (folder, *folder.parents) if not p.exists()][-1]), {})
    return path


def _launch_name(key: tuple, choose) -> str:
    if key not in LAUNCH_NAMES:
        LAUNCH_NAMES[key] = choose(dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f"))
    return LAUNCH_NAMES[key]


def hydra_record_folder(folder: str) -> str:
    """Where Hydra writes a job's config: .hydra for a folder's first launch, .hydra/<time>
    for later ones (a resumed run, a continued search), so no launch overwrites another's."""
    return _launch_name(("record", folder), lambda stamp: ".hydra" if not (Path(folder) / ".hydra").exists()
                        else f".hydra/{stamp}")


def job_log_file(folder: str, job: str) -> str:
    """<folder>/<job>.log for a folder's first launch, <job>.<time>.log for later ones:
    no launch appends to another's log."""
    return _launch_name(("log", folder, job), lambda stamp: str(Path(folder) / f"{job}.log")
                        if not (Path(folder) / f"{job}.log").exists() else str(Path(folder) / f"{job}.{stamp}.log"))


def run_folder(base: str, task: str, resume: bool, run_name: Optional[str], overwrite: bool) -> str:
    """`snnlstm train`'s run dir: <base>/<task>/<run_name or timestamp>.

    With resume=true and no run_name, the newest folder of this task that holds a
    ``last.pt`` is reused, so ``snnlstm train resume=true`` continues where the last
    run stopped. A named folder that holds another run's checkpoints is refused
    unless resume=true (continue it) or overwrite=true (replace it)."""
    task_dir = Path(base) / folder_name(task, "task.name")
    if run_name:
        folder = task_dir / folder_name(run_name, "run_name")
        if not (resume or overwrite) and any((folder / name).exists() for name in CHECKPOINT_FILES):
            raise UserError(f"{folder} holds the checkpoints of an earlier run: continue it with resume=true, or "
                            "give a new run_name (overwrite=true deletes them and starts afresh)")
        return job_folder(str(folder))
    if resume:
        candidates = sorted(task_dir.glob("*/last*.pt"), key=lambda p: p.stat().st_mtime)
        if candidates:
            return job_folder(str(candidates[-1].parent))
    return job_folder(_launch_name(("run", str(task_dir)), lambda stamp: str(_free_folder(task_dir, stamp[:19]))))


def _free_folder(parent: Path, stamp: str) -> Path:
    folder, n = parent / stamp, 1
    while folder.exists():
        folder, n = parent / f"{stamp}_{n}", n + 1
    return folder


def register_resolvers() -> None:
    for name, resolver in (("snnlstm_run_dir", run_folder), ("snnlstm_job_dir", job_folder), ("snnlstm_name", folder_name),
                           ("snnlstm_hydra_subdir", hydra_record_folder), ("snnlstm_log_file", job_log_file)):
        if not OmegaConf.has_resolver(name):
            # not cached by OmegaConf: Hydra resolves through more than one copy of the config
            OmegaConf.register_new_resolver(name, resolver)


register_schemas()
register_resolvers()


# ----------------------------------------------------------------- instantiate
def allowed_target(target: str) -> bool:
    """Whether `target` names a callable defined in an allowed package: the dotted path
    is followed from the longest prefix that imports, and neither a module on the way
    nor the callable's own module may lie outside the allowed packages (so
    `snn_lstm.errors.os.system`, os imported into one of ours, is refused)."""
    allowed = lambda module: (module + ".").startswith(ALLOWED_TARGET_PREFIXES)  # noqa: E731
    if not allowed(target):
        return False
    parts = target.split(".")
    for depth in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:depth]))
            break
        except ImportError:
            continue
    else:
        return False
    for name in parts[depth:]:
        found = getattr(found, name, None)
        if found is None or (inspect.ismodule(found) and not allowed(found.__name__)):
            return False
    module = found.__name__ if inspect.ismodule(found) else getattr(found, "__module__", None)
    return isinstance(module, str) and allowed(module)


def check_targets(cfg: Any, where: str = "config") -> None:
    """Refuse any `_target_` outside the allowed packages, at any depth."""
    if isinstance(cfg, (DictConfig, dict)):
        target = cfg.get("_target_")
        if target is not None and not allowed_target(str(target)):
            raise UserError(
                f"{where}: _target_ '{target}' is not allowed; configs may only instantiate "
                f"callables defined under {', '.join(ALLOWED_TARGET_PREFIXES)}"
            )
        for key, value in cfg.items():
            check_targets(value, f"{where}.{key}")
    elif isinstance(cfg, (ListConfig, list, tuple)):
        for index, value in enumerate(cfg):
            check_targets(value, f"{where}[{index}]")


def instantiate(cfg: Any, where: str, **kwargs: Any) -> Any:
    """hydra.utils.instantiate behind the allow-list."""
    check_targets(cfg, where)
    return hydra.utils.instantiate(cfg, **kwargs)


def to_plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, (DictConfig, ListConfig)) else cfg

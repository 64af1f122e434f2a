"""Typed schema of every config group, the run-folder resolver and the
allow-list of what configs may instantiate.

Each YAML option in ``conf/`` extends its schema here (``schema/<group>/<name>``),
so a misspelt key or a wrong type fails while Hydra composes the config.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra.utils
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from snn_lstm.errors import UserError

CONFIG_PATH = "pkg://snn_lstm.conf"

# The only callables a config's `_target_` may name (also for configs read back
# from checkpoints or MLflow): our own package and torch's optimizers/schedulers.
ALLOWED_TARGET_PREFIXES = ("snn_lstm.", "torch.optim.")


# ----------------------------------------------------------------- schema
@dataclass
class DistillConfig:
    teacher: Optional[str] = None  # checkpoint of a model trained on the same data; None: learn from the labels alone
    weight: float = 0.5  # w in the training target (1 - w) one-hot(y) + w softmax(z_teacher / T)
    temperature: float = 2.0  # T


@dataclass
class SineTaskConfig:
    name: str = "sine"
    kind: str = "sine"
    readout: str = "sequence"
    hidden_size: int = 100  # the paper's network for this task
    seq_len: int = 100
    channels: int = 20
    dt: float = 0.1  # x advances by dt per step
    val_size: int = 256
    test_size: int = 1024
    figure_steps: List[int] = field(default_factory=lambda: [0, 5, 20, 100])


@dataclass
class ImageTaskConfig:
    name: str = MISSING  # smnist, semnist, pmnist, psmnist, ...
    kind: str = "image"
    readout: str = "last"
    hidden_size: int = 200  # the authors' MNIST network
    dataset: str = "mnist"  # mnist, emnist or idx (any folder in MNIST's file layout)
    emnist_split: str = "balanced"
    folder: Optional[str] = None  # for dataset=idx: folder under paths.data_dir
    layout: str = "rows"  # rows, pixels or permuted_pixels
    permutation_seed: int = 0
    val_size: int = 5000  # the last training images, held out to pick best.pt
    eval_draws: int = 1  # spike trains averaged per evaluation image (1: the paper's single draw)
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass
class LanguageTaskConfig:
    name: str = MISSING  # char_lm or word_lm
    kind: str = "language"
    level: str = "char"  # char or word
    text: str = "alice"  # alice or wikitext2
    split: str = "paper"  # paper (52,000 / 12,000 characters) or full
    readout: str = "sequence"
    hidden_size: int = 200
    bptt: int = 100  # tokens per truncated-BPTT window
    val_fraction: float = 0.05  # the end of the training text, held out to pick best.pt
    vector_size: int = 100  # word_lm: word2vec dimensions
    w2v_window: int = 5
    w2v_epochs: int = 20
    samples: int = 3  # text samples written at the end of training
    sample_length: int = 200


@dataclass
class SpeechTaskConfig:
    name: str = "fsdd"
    kind: str = "speech"
    readout: str = "last"  # the paper: softmax on h_T
    hidden_size: int = 200
    speakers: List[str] = field(default_factory=lambda: ["jackson", "nicolas", "theo", "yweweler"])  # the paper's 4
    test_speakers: Optional[List[str]] = None  # None: the training speakers
    val_from_index: int = 45  # training indices 5-49: [5, 45) train, [45, 50) validation
    num_samples: int = 8192  # every recording cut or zero-padded to this length
    layout: str = "averaged"  # averaged (the paper's: steps x C/steps) or frames (frames x C)
    steps: int = 8  # averaged layout: 336 scattering coefficients as 8 steps of 42
    eval_draws: int = 1  # spike trains averaged per evaluation recording
    distill: DistillConfig = field(default_factory=DistillConfig)
    frontend: Any = None  # the frontend group


@dataclass
class ScatteringConfig:
    name: str = "scattering"
    J: int = 8  # averaging scale 2^J samples
    Q: int = 12  # wavelets per octave (first order)
    log_eps: float = 1e-6


@dataclass
class MelConfig:
    name: str = MISSING  # mfcc or logmel
    n_mfcc: int = 40  # mfcc only
    n_mels: int = 40
    n_fft: int = 256  # 32 ms at 8 kHz
    hop_length: int = 128  # 16 ms
    log_eps: float = 1e-6  # logmel only


@dataclass
class EncoderConfig:
    name: str = "bernoulli"  # bernoulli or identity


@dataclass
class SpikingLSTMConfig:
    name: str = "slstm"
    hidden_size: int = 100
    num_layers: int = 1
    theta1: float = 0.1
    theta2: float = 0.1
    cell_grad: str = "straight_through"
    init: str = "he"
    engine: str = "auto"  # auto (fused: C++ on a CPU, Triton on a GPU), cpp, triton, torch (fused, any device), reference
    matmul_dtype: str = "float32"  # or tf32, bfloat16, float16: the fused engines' matrix products


@dataclass
class LSTMConfig:
    name: str = "lstm"
    hidden_size: int = 100
    num_layers: int = 1


@dataclass
class SurrogateConfig:
    name: str = "gaussian"
    alpha1: float = 4.0  # width for the gates i, f, o
    alpha2: float = 0.3  # width for the candidate g


@dataclass
class OptimizerConfig:
    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0


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


@dataclass
class TrackingConfig:
    backend: str = "mlflow"  # mlflow or none
    uri: Optional[str] = None  # None: MLFLOW_TRACKING_URI, else sqlite in paths.run_dir
    experiment: str = "snnlstm"


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
    surrogate: SurrogateConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    trainer: TrainerConfig = MISSING
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING
    seed: int = 0
    resume: bool = False
    run_name: Optional[str] = None  # run folder name under paths.run_dir/<task>; default a timestamp
    tags: Dict[str, str] = field(default_factory=dict)  # extra MLflow tags (paper_table, row, ...)


@dataclass
class EvaluateConfig:
    ckpt: str = MISSING
    split: str = "test"
    draws: Optional[int] = None  # image tasks: spike trains averaged per image (None: the run's task.eval_draws)
    device: str = "cpu"
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING


@dataclass
class GenerateConfig:
    ckpt: str = MISSING
    prompt: str = "alice "
    length: int = 200
    temperature: float = 0.8
    seed: int = 0
    paths: PathsConfig = MISSING


@dataclass
class BenchShape:
    steps: int = MISSING
    batch: int = MISSING
    input: int = MISSING
    hidden: int = MISSING


@dataclass
class BenchConfig:
    device: str = "cpu"
    threads: Optional[int] = None
    repeats: int = 10
    warmup: int = 3
    engines: List[str] = field(default_factory=lambda: ["auto"])
    matmul_dtypes: List[str] = field(default_factory=lambda: ["float32"])
    shapes: Dict[str, BenchShape] = field(default_factory=dict)
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING


@dataclass
class ReportConfig:
    format: str = "md"  # md (a Markdown file per table) or html (one self-contained page)
    out_dir: str = "reports"
    paper_values: str = "experiments/paper_values.yaml"
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING


@dataclass
class SearchSpaceConfig:
    name: str = MISSING
    train: List[str] = field(default_factory=list)  # `snnlstm train` overrides of every trial
    params: Dict[str, Any] = field(default_factory=dict)  # override key -> {type, low, high, log, step | choices}


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
        ("surrogate", "surrogate", SurrogateConfig),
        ("optimizer", "optimizer", OptimizerConfig),
        ("trainer", "trainer", TrainerConfig),
        ("tracking", "tracking", TrackingConfig),
        ("paths", "paths", PathsConfig),
    ):
        cs.store(group=f"schema/{group}", name=name, node=node)


# ----------------------------------------------------------------- run folder
def run_folder(base: str, task: str, resume: bool, run_name: Optional[str]) -> str:
    """Hydra's run dir: <base>/<task>/<run_name or timestamp>.

    With resume=true and no run_name, the newest folder of this task that holds a
    ``last.pt`` is reused, so ``snnlstm train resume=true`` continues where the last
    run stopped.
    """
    task_dir = Path(base) / task
    if run_name:
        return str(task_dir / run_name)
    if resume:
        candidates = sorted(task_dir.glob("*/last*.pt"), key=lambda p: p.stat().st_mtime)
        if candidates:
            return str(candidates[-1].parent)
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    folder, n = task_dir / stamp, 1
    while folder.exists():
        folder, n = task_dir / f"{stamp}_{n}", n + 1
    return str(folder)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("snnlstm_run_dir"):
        OmegaConf.register_new_resolver("snnlstm_run_dir", run_folder, use_cache=True)


register_schemas()
register_resolvers()


# ----------------------------------------------------------------- instantiate
def check_targets(cfg: Any, where: str = "config") -> None:
    """Refuse any `_target_` outside ALLOWED_TARGET_PREFIXES, at any depth."""
    if isinstance(cfg, (DictConfig, dict)):
        target = cfg.get("_target_")
        if target is not None and not str(target).startswith(ALLOWED_TARGET_PREFIXES):
            raise UserError(
                f"{where}: _target_ '{target}' is not allowed; configs may only instantiate "
                f"names under {', '.join(ALLOWED_TARGET_PREFIXES)}"
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

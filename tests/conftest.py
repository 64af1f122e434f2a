"""Shared fixtures: composed configs, a clean environment for subprocess runs."""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch
import snn_lstm.config  # noqa: F401  (registers the schemas and resolvers)
from snn_lstm.recipes import compose_train  # noqa: F401  (the tests compose train configs as the report does)

# Tests never touch the network: loaders that would download stop with an error instead.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", SNNLSTM_OFFLINE="1")
# nor the user's MLflow server or Hydra settings (a shell with MLFLOW_TRACKING_URI set is common)
for name in [name for name in os.environ if name.startswith(("MLFLOW_", "HYDRA_")) or name == "SNNLSTM_FULL_ERROR"]:
    del os.environ[name]
# Without a GPU the Triton engine's kernels run in Triton's interpreter, on CPU tensors
# (read when triton is first imported, which nothing does before the tests run).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

BIN = Path(sys.executable).parent
CONFIG_MODULE = "snn_lstm.conf"


def write_tiny_idx(folder: Path, train: int = 96, test: int = 40, classes: int = 10, size: int = 28, seed: int = 0,
                   vertical: bool = False) -> Path:
    """A dataset in MNIST's file layout, small enough for tests: each class is a
    bright band at its own height (or, `vertical`, at its own column: then every row
    read as a step shows the class), so a model can learn it in a few steps."""
    import numpy as np

    from snn_lstm.data.idx import write_idx

    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, classes, count).astype(np.uint8)
        images = rng.integers(0, 60, (count, size, size)).astype(np.uint8)
        for image, label in zip(images, labels):
            start = int(label) * size // classes
            if vertical:
                image[:, start : start + 2] = 250
            else:
                image[start : start + 2] = 250
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


def payload(step: int = 0, **contents):
    """The smallest checkpoint payload load_checkpoint accepts, plus `contents`."""
    return {"config": {}, "model_args": {}, "model": {}, "step": step, **contents}


TINY_BODY = "alice was beginning to get very tired of sitting by her sister on the bank.\n" * 40


def write_texts(root: Path, body: str = TINY_BODY) -> Path:
    """`text/` as the language tasks expect it: a Gutenberg-style Alice and WikiText-2 files."""
    text = root / "text"
    (text / "wikitext-2").mkdir(parents=True, exist_ok=True)
    (text / "alice.txt").write_text(
        "\ufeffProject Gutenberg header\nlicence lines\n*** START OF THIS PROJECT GUTENBERG EBOOK ALICE ***\n"
        + body.upper() + "*** END OF THIS PROJECT GUTENBERG EBOOK ALICE ***\nEnd of licence\n"
    )
    wiki = " = Title = \n the <unk> game is a role @-@ playing game . \n" * 60
    (text / "wikitext-2" / "wiki.train.excerpt.tokens").write_text(wiki)
    (text / "wikitext-2" / "wiki.train.tokens").write_text(wiki * 2)
    (text / "wikitext-2" / "wiki.test.tokens").write_text(wiki.replace("game", "story"))
    return root


def write_tiny_fsdd(root: Path, speakers=("jackson", "theo"), indices=(0, 1, 5, 6, 45), seconds: float = 0.25) -> Path:
    """`fsdd/recordings/` of synthetic 8 kHz tones, one pitch per digit, so a model can
    tell the digits apart; the speakers differ in loudness and noise."""
    import numpy as np
    import soundfile

    folder = root / "fsdd" / "recordings"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(8000 * seconds)) / 8000
    for s, speaker in enumerate(speakers):
        for digit in range(10):
            for index in indices:
                wave = (0.3 + 0.2 * s) * np.sin(2 * np.pi * (300 + 150 * digit) * t) + 0.02 * rng.standard_normal(len(t))
                soundfile.write(folder / f"{digit}_{speaker}_{index}.wav", wave.astype(np.float32), 8000, subtype="PCM_16")
    return root


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """paths.data_dir with small stand-ins for every dataset (see TINY)."""
    root = tmp_path_factory.mktemp("data")
    write_tiny_idx(root / "tiny")
    write_texts(root)
    write_tiny_fsdd(root)
    return root


# Overrides that point each kind of task at the small data of tiny_data_dir.
TINY = {
    "sine": [],
    "image": ["task.dataset=idx", "task.folder=tiny", "task.val_size=16"],
    "language": ["task.split=full", "task.bptt=10", "task.w2v_epochs=1"],
    "speech": ["task.speakers=[jackson,theo]", "task.num_samples=2048"],
}
TINY_IMAGES = TINY["image"]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running the installed `snnlstm`: offline, no inherited MLflow store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


@cache
def empty_store() -> Path:
    """An MLflow sqlite store with its tables made. MLflow takes seconds to create and
    migrate the tables of a new store, and most CLI tests start on one; they get a copy
    of this instead (tests of store creation pass their own tracking.uri or none)."""
    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="snnlstm-store-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


def give_run_dir_a_store(args: list[str]) -> None:
    """Copy empty_store() to <paths.run_dir>/mlflow.db when the command will use that store."""
    if any(a == "tracking=none" or a.startswith("tracking.uri=") for a in args):
        return
    run_dir = next((Path(a.split("=", 1)[1]) for a in args if a.startswith("paths.run_dir=")), None)
    if run_dir is None or (run_dir / "mlflow.db").exists():
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_store(), run_dir / "mlflow.db")
    except OSError:  # a test of an unwritable run_dir: the command reports it itself
        pass


def snnlstm(args: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user would."""
    give_run_dir_a_store(args)
    result = subprocess.run(
        [str(BIN / "snnlstm"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snnlstm {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


# ----------------------------------------------------------------- a verb in this process
@dataclass
class Outcome:
    code: int | str
    stderr: str
    lines: list[str]  # stderr without progress and log lines
    stdout: str = ""


def run_verb(args: list[str], cwd: Path) -> Outcome:
    """`snnlstm ARGS` run through snn_lstm.cli.main in this process (a tenth of a
    second instead of seconds), started in `cwd`."""
    from hydra.core.global_hydra import GlobalHydra

    from snn_lstm import cli

    GlobalHydra.instance().clear()
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    code: int | str = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(list(args))
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
            except BaseException as error:  # noqa: BLE001  what escapes the verb is what the test is for
                import traceback

                traceback.print_exc()
                code = f"escaped {type(error).__name__}"
    finally:
        os.chdir(previous)
        GlobalHydra.instance().clear()
    lines = [line for line in err.getvalue().splitlines()
             if line.strip() and not any(level in line for level in ("][INFO] - ", "][WARNING] - ")) and "%|" not in line]
    return Outcome(code, err.getvalue(), lines, out.getvalue())


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root`, with its size and modification time."""
    state = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder) / name
            info = path.lstat()
            state[str(path.relative_to(root))] = (info.st_size if name in files else 0, info.st_mtime_ns)
    return state

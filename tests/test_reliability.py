"""Reliability: kills, signals, damaged checkpoints, a failing tracking store,
non-finite losses, and the catalogue of bad input (one line, exit 2, no traceback)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

import snn_lstm.checkpoint as checkpoints
from snn_lstm.checkpoint import load_checkpoint, load_latest, previous_path, save_checkpoint
from snn_lstm.errors import UserError
from snn_lstm.tasks.sine import SineTask
from snn_lstm.tracking import BACKLOG, MlflowTracker
from snn_lstm.train import train

from conftest import BIN, compose_train, empty_store, payload, run_verb, snapshot, snnlstm, write_tiny_fsdd, write_tiny_idx

SMOKE = ["trainer=smoke", "trainer.eval_limit=8"]
INFO_LOG = re.compile(r"^\[[0-9-]+ [0-9:,]+\]\[[\w.]+\]\[INFO\] - ")  # progress logs, not errors

# Injected into a `snnlstm` subprocess through PYTHONPATH: the Nth torch.save either
# writes half its bytes and SIGKILLs the process (a kill during a checkpoint write)
# or fails as a full disk would.
SITECUSTOMIZE = '''
import os
if os.environ.get("FAULT_AT_SAVE"):
    import io, signal, errno, torch
    real_save, calls = torch.save, [0]
    def faulty_save(obj, handle, *args, **kwargs):
        calls[0] += 1
        if calls[0] == int(os.environ["FAULT_AT_SAVE"]):
            if os.environ["FAULT_KIND"] == "disk_full":
                raise OSError(errno.ENOSPC, "No space left on device")
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            handle.flush()
            os.fsync(handle.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, handle, *args, **kwargs)
    torch.save = faulty_save
'''


@pytest.fixture
def fault_env(tmp_path, cli_env) -> dict[str, str]:
    folder = tmp_path / "inject"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {**cli_env, "PYTHONPATH": str(folder)}


def store(run_dir: Path) -> MlflowClient:
    return MlflowClient(tracking_uri="sqlite:///" + str(run_dir / "mlflow.db"))


def assert_same_run_outcome(straight: Path, resumed: Path) -> None:
    a, b = (torch.load(folder / "last.pt", weights_only=True) for folder in (straight, resumed))
    assert a["step"] == b["step"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["metrics"] == b["metrics"]


# ----------------------------------------------------------------- kill and resume
def test_sigkill_during_a_checkpoint_write_resumes_to_the_same_weights_and_run(tmp_path, cli_env, fault_env):
    run_dir = tmp_path / "runs"
    common = [*SMOKE, "trainer.steps=8", "trainer.eval_every=2", f"paths.run_dir={run_dir}"]
    snnlstm(["train", *common, "run_name=straight", "tracking=none"], tmp_path, cli_env)
    killed = snnlstm(["train", *common, "run_name=killed"], tmp_path, {**fault_env, "FAULT_AT_SAVE": "3",
                                                                          "FAULT_KIND": "kill"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    folder = run_dir / "sine" / "killed"
    assert list(folder.glob(".*.tmp")), "the kill happened inside a checkpoint write"
    assert load_checkpoint(folder / "last.pt")["step"] < 8  # the last complete checkpoint is intact
    snnlstm(["train", *common, "run_name=killed", "resume=true"], tmp_path, cli_env)
    assert not list(folder.glob(".*.tmp"))
    assert_same_run_outcome(run_dir / "sine" / "straight", folder)
    client = store(run_dir)
    (run,) = client.search_runs([client.get_experiment_by_name("snnlstm").experiment_id])
    assert run.info.status == "FINISHED"
    assert {m.step for m in client.get_metric_history(run.info.run_id, "train/loss")} == set(range(1, 9))


def test_sigkill_at_a_random_moment_resumes_to_the_same_weights(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    common = [*SMOKE, "trainer.steps=300", "trainer.eval_every=3", "trainer.log_every=3", f"paths.run_dir={run_dir}",
              "tracking=none"]
    snnlstm(["train", *common, "run_name=straight"], tmp_path, cli_env)
    process = subprocess.Popen([str(BIN / "snnlstm"), "train", *common, "run_name=killed"], cwd=tmp_path, env=cli_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "sine" / "killed" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    process.kill()
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    # a kill between the two renames of a checkpoint write leaves only last.prev.pt: what resume reads too
    assert load_latest(last)[0]["step"] < 300
    snnlstm(["train", *common, "run_name=killed", "resume=true"], tmp_path, cli_env)
    assert_same_run_outcome(run_dir / "sine" / "straight", run_dir / "sine" / "killed")


def test_sigterm_writes_a_final_checkpoint_and_marks_the_run_killed(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    process = subprocess.Popen([str(BIN / "snnlstm"), "train", *SMOKE, "trainer.steps=100000", "trainer.eval_every=50",
                                f"paths.run_dir={run_dir}", "run_name=stopped"], cwd=tmp_path, env=cli_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = run_dir / "sine" / "stopped" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    final_line = stderr.strip().splitlines()[-1]
    assert final_line.startswith("snnlstm train: stopped by SIGTERM at step ") and "resume=true" in final_line
    step = int(final_line.split("at step ")[1].split(":")[0])
    assert load_checkpoint(last)["step"] == step
    client = store(run_dir)
    (run,) = client.search_runs([client.get_experiment_by_name("snnlstm").experiment_id])
    assert run.info.status == "KILLED"


# ----------------------------------------------------------------- checkpoint integrity
def test_damaged_checkpoints_are_detected_and_the_previous_one_used(tmp_path, caplog):
    path = tmp_path / "last.pt"
    save_checkpoint(payload(1, model={"w": torch.arange(4000.0)}), path)
    save_checkpoint(payload(2, model={"w": torch.arange(4000.0) + 1}), path)
    assert load_checkpoint(previous_path(path))["step"] == 1
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit inside the tensor bytes: torch itself would load it
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="is damaged"):
        load_checkpoint(path)
    checkpoint, used = load_latest(path)
    assert used == previous_path(path) and checkpoint["step"] == 1 and "previous checkpoint" in caplog.text
    path.write_bytes(bytes(data[:1000]))  # truncated
    assert load_latest(path)[0]["step"] == 1
    path.unlink()  # a kill between the two renames of a save
    assert load_latest(path)[0]["step"] == 1


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(payload(1), tmp_path / "last.pt")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", full)
    with pytest.raises(UserError, match="no space left to write checkpoint"):
        save_checkpoint(payload(2), path)
    assert load_checkpoint(path)["step"] == 1 and not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------- tracking outage
def test_an_unreachable_store_keeps_training_and_the_backlog_replays(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    result = snnlstm(["train", *SMOKE, "tracking.uri=http://127.0.0.1:9", f"paths.run_dir={run_dir}", "run_name=offline"],
                     tmp_path, cli_env)
    assert result.stderr.count("training goes on") == 1
    folder = run_dir / "sine" / "offline"
    assert (folder / BACKLOG).is_file() and (folder / "last.pt").is_file()
    uri = "sqlite:///" + str(tmp_path / "later.db")
    snnlstm(["sync", f"run={folder}", f"tracking.uri={uri}"], tmp_path, cli_env)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("snnlstm").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["trainer.steps"] == "4"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [1, 2, 3, 4]
    assert "test/mse" in run.data.metrics
    assert not (folder / BACKLOG).exists() and (folder / "tracking_backlog.synced.jsonl").exists()


def _open_run_when_all_are_ready(uri, barrier, index):
    barrier.wait()
    MlflowTracker(uri, "snnlstm", run_name=f"job{index}").finish()


def test_jobs_starting_together_on_a_new_store_all_get_their_run(tmp_path):
    """Jobs of a parallel sweep create the sqlite store at the same moment; without a
    lock around MLflow's table and experiment creation one of them fails."""
    import multiprocessing

    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    jobs = [context.Process(target=_open_run_when_all_are_ready, args=(uri, barrier, n)) for n in range(4)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(120)
    assert [job.exitcode for job in jobs] == [0, 0, 0, 0]
    client = MlflowClient(tracking_uri=uri)
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "snnlstm"]
    runs = client.search_runs([client.get_experiment_by_name("snnlstm").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["job0", "job1", "job2", "job3"]


def test_a_store_failing_mid_run_goes_on_in_the_backlog(tmp_path, monkeypatch, caplog):
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    real, calls = MlflowTracker.log_metrics, []

    def failing_after_two(self, metrics, step):
        calls.append(step)
        if len(calls) > 2:
            raise ConnectionError("the store went away")
        real(self, metrics, step)

    monkeypatch.setattr(MlflowTracker, "log_metrics", failing_after_two)
    cfg = compose_train([*SMOKE, f"tracking.uri={uri}", f"paths.run_dir={tmp_path}"])
    train(cfg, tmp_path / "run")
    assert caplog.text.count("training goes on") == 1
    records = [json.loads(line) for line in (tmp_path / "run" / BACKLOG).read_text().splitlines()]
    assert records[0]["op"] == "start" and records[0]["run_id"]  # replays into the run it began
    assert records[-1] == {"op": "finish", "status": "FINISHED"}
    monkeypatch.setattr(MlflowTracker, "log_metrics", real)
    from snn_lstm.sync import sync

    sync(str(tmp_path / "run"), None)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(records[0]["run_id"])
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [1, 2, 3, 4]


# ----------------------------------------------------------------- numerical faults
@pytest.fixture
def nan_at_step_two(monkeypatch):
    real, calls = SineTask.loss, []

    def loss(self, output, target):
        calls.append(1)
        value = real(self, output, target)
        return value * float("nan") if len(calls) == 3 else value

    monkeypatch.setattr(SineTask, "loss", loss)


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, nan_at_step_two):
    cfg = compose_train([*SMOKE, "tracking=none", f"paths.run_dir={tmp_path}"])
    with pytest.raises(UserError, match=r"non-finite \(nan\) at step 2: .*on_nonfinite=skip"):
        train(cfg, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2  # the eval checkpoint before the fault


def test_a_nan_loss_can_be_skipped_and_counted(tmp_path, nan_at_step_two):
    cfg = compose_train([*SMOKE, "tracking=none", f"paths.run_dir={tmp_path}", "trainer.on_nonfinite=skip",
                         "trainer.log_every=4"])
    train(cfg, tmp_path / "run")
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint["step"] == 4 and checkpoint["running"]["skipped"] == 1
    assert all(torch.isfinite(w).all() for w in checkpoint["model"].values())


# ----------------------------------------------------------------- bad input catalogue
def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def bad_data(tmp_path: Path) -> Path:
    """A data folder with one broken copy of each kind of dataset."""
    data = tmp_path / "baddata"
    _write(data / "text" / "alice.txt", b"")
    _write(data / "text" / "wikitext-2" / "wiki.train.excerpt.tokens", b"\x00\x01binary\x00")
    _write(data / "text" / "wikitext-2" / "wiki.test.tokens", b"\x00\x01binary\x00")
    write_tiny_idx(data / "corrupt")
    (data / "corrupt" / "train-images-idx3-ubyte.gz").unlink()
    _write(data / "corrupt" / "train-images-idx3-ubyte", b"\x01\x02\x03\x04garbage")
    write_tiny_fsdd(data / "emptywav", speakers=("jackson",), indices=(0, 5, 45))
    import numpy as np
    import soundfile

    soundfile.write(data / "emptywav" / "fsdd" / "recordings" / "3_jackson_6.wav", np.zeros(0), 8000)
    return data


def read_only_folder(tmp_path: Path) -> str:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder / "runs") if not os.access(folder, os.W_OK) else "/sys/snnlstm-readonly"  # root ignores modes


CATALOGUE = [  # (args, fragment of the one line); {data}, {tmp}, {ro} are filled in per test
    (["train", "model.hiden_size=3"], "hiden_size"),
    (["train", "trainer.steps=many"], "steps"),
    (["train", "model=transformer"], "transformer"),
    (["train", "task=chess"], "Could not find 'task/chess'"),
    (["train", "model.theta1=1.5"], "model.theta1 must lie in [0, 1)"),
    (["train", "model.alpha1=-1"], "model.alpha1 must be > 0"),
    (["train", "trainer.batch_size=0"], "trainer.batch_size must be a positive integer"),
    (["train", "model.hidden_size=-5"], "hidden_size must be a positive integer up to 2147483647, got -5"),
    (["train", "trainer.on_nonfinite=maybe"], "trainer.on_nonfinite must be one of stop, skip"),
    (["train", "task=smnist", "paths.data_dir={tmp}/nothing"], "mnist is not in"),
    (["train", "task=char_lm", "task.split=full", "paths.data_dir={data}"], "alice.txt is empty"),
    (["train", "task=char_lm", "text=wikitext2", "paths.data_dir={data}"], "is not a text file"),
    (["train", "task=smnist", "task.dataset=idx", "task.folder=corrupt", "paths.data_dir={data}"], "is not an IDX file"),
    (["train", "task=fsdd", "task.speakers=[jackson]", "paths.data_dir={data}/emptywav"], "3_jackson_6.wav holds no samples"),
    (["train", "task=fsdd", "task/frontend=wavelet"], "Could not find 'task/frontend/wavelet'"),
    (["train", "paths.run_dir={ro}"], "point the paths.* setting at a writable folder"),
    (["evaluate"], "ckpt"),
    (["evaluate", "ckpt=nowhere.pt"], "does not exist"),
    (["evaluate", "ckpt={tmp}"], "is a folder, not a file"),
    (["evaluate", "ckpt={data}/text/alice.txt"], "cannot be read"),
    (["report", "tracking.uri=http://127.0.0.1:9", "out_dir={tmp}/report"], "MLflow store http://127.0.0.1:9 failed"),
    (["report", "format=pdf", "out_dir={tmp}/report"], "format must be one of md, html"),
    (["sync", "run={tmp}"], "tracking_backlog.jsonl does not exist"),
]


@pytest.mark.parametrize("args, fragment", CATALOGUE, ids=[" ".join(a) for a, _ in CATALOGUE])
def test_bad_input_is_one_line_and_exit_2(tmp_path, cli_env, args, fragment):
    places = {"data": bad_data(tmp_path), "tmp": tmp_path, "ro": read_only_folder(tmp_path)}
    filled = [a.format(**places) for a in args]
    if filled[0] == "train":
        filled += ["tracking=none", *SMOKE]
    if filled[0] in ("train", "evaluate") and not any(a.startswith("paths.run_dir=") for a in filled):
        filled.append(f"paths.run_dir={tmp_path / 'runs'}")
    result = snnlstm(filled, tmp_path, cli_env, check=False)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not INFO_LOG.match(line)]
    assert len(lines) == 1 and lines[0].startswith(f"snnlstm {filled[0]}: error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_full_disk_stops_training_with_one_line(tmp_path, fault_env):
    result = snnlstm(["train", *SMOKE, "tracking=none", f"paths.run_dir={tmp_path / 'runs'}", "run_name=full"], tmp_path,
                     {**fault_env, "FAULT_AT_SAVE": "3", "FAULT_KIND": "disk_full"}, check=False)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and not INFO_LOG.match(line)]
    assert len(lines) == 1 and "no space left to write checkpoint" in lines[0] and "Traceback" not in result.stderr
    assert load_checkpoint(tmp_path / "runs" / "sine" / "full" / "last.pt")["step"] == 2


# ----------------------------------------------------------------- nothing lost, nothing escapes
def run_folder_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_name_in_use_is_refused_and_its_run_kept_whole(tmp_path):
    train_args = ["train", *SMOKE, "tracking=none", f"paths.run_dir={tmp_path / 'runs'}", "run_name=first"]
    assert run_verb(train_args, tmp_path).code == 0
    folder = tmp_path / "runs" / "sine" / "first"
    before = run_folder_files(folder)
    again = run_verb(train_args, tmp_path)
    assert again.code == 2 and len(again.lines) == 1 and "resume=true" in again.lines[0] and "run_name" in again.lines[0]
    assert run_folder_files(folder) == before
    # continued: the checkpoints move on, the first launch's record and log stay as they were
    assert run_verb([*train_args, "resume=true", "trainer.steps=6"], tmp_path).code == 0
    after = run_folder_files(folder)
    assert load_checkpoint(folder / "last.pt")["step"] == 6
    assert all(after[name] == content for name, content in before.items() if name.startswith((".hydra/", "train.log")))
    assert len([name for name in after if name.startswith("train.") and name.endswith(".log")]) == 2
    # replaced, when asked for
    assert run_verb([*train_args, "overwrite=true", "trainer.steps=2", "trainer.eval_every=1"], tmp_path).code == 0
    assert load_checkpoint(folder / "last.pt")["step"] == 2 and load_checkpoint(folder / "best.pt")["step"] <= 2


def test_resuming_with_a_budget_below_the_checkpoint_changes_nothing(tmp_path):
    train_args = ["train", *SMOKE, "tracking=none", f"paths.run_dir={tmp_path / 'runs'}", "run_name=run"]
    assert run_verb(train_args, tmp_path).code == 0
    folder = tmp_path / "runs" / "sine" / "run"
    before = run_folder_files(folder)
    refused = run_verb([*train_args, "resume=true", "trainer.steps=2"], tmp_path)
    assert refused.code == 2 and "at step 4" in refused.lines[0] and "trainer.steps" in refused.lines[0]
    assert run_folder_files(folder) == before and load_checkpoint(folder / "last.pt")["step"] == 4


@pytest.mark.parametrize("run_name", ["../../escaped", "/tmp/escaped", "a/b", ".."])
def test_a_run_name_is_one_folder_name(tmp_path, run_name):
    (tmp_path / "runs").mkdir()
    outcome = run_verb(["train", *SMOKE, "tracking=none", f"paths.run_dir={tmp_path / 'runs' / 'deep'}",
                        f"run_name={run_name}"], tmp_path / "runs")
    assert outcome.code == 2 and "run_name must be one folder name" in outcome.lines[0]
    assert list(tmp_path.rglob("*")) == [tmp_path / "runs"]


def test_an_unexpected_exception_is_one_line_with_the_traceback_in_the_log(tmp_path, monkeypatch):
    import snn_lstm.train

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in the loop")

    monkeypatch.setattr(snn_lstm.train, "train_step", broken)
    outcome = run_verb(["train", *SMOKE, "tracking=none", f"paths.run_dir={tmp_path / 'runs'}", "run_name=bug"], tmp_path)
    log = tmp_path / "runs" / "sine" / "bug" / "train.log"
    assert outcome.code == 1 and outcome.lines == [
        f"snnlstm train: internal error: ZeroDivisionError: a bug in the loop; the traceback is in {log}"]
    assert "Traceback" not in outcome.stderr
    assert "Traceback (most recent call last)" in log.read_text() and "a bug in the loop" in log.read_text()


def test_an_explicit_tracking_uri_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    uri = f"sqlite:///{tmp_path / 'mine.db'}"
    cfg = compose_train([*SMOKE, f"tracking.uri={uri}", f"paths.run_dir={tmp_path}"])
    train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / BACKLOG).exists()
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("snnlstm").experiment_id])
    assert run.info.status == "FINISHED"


def test_the_suite_ignores_the_shells_mlflow_settings(tmp_path):
    """A user's shell often points MLFLOW_TRACKING_URI at a server: the tests must
    neither fail nor write there (here: a server that does not answer)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_EXPERIMENT_NAME": "theirs"}
    result = subprocess.run([str(BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_reliability.py::test_a_store_failing_mid_run_goes_on_in_the_backlog",
                             "tests/test_cli.py::test_train_then_evaluate_with_mlflow"],
                            cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 passed" in result.stdout


@pytest.mark.parametrize("store", ["unwritable folder", "read-only database"])
def test_a_read_only_store_is_one_warning_and_leaves_nothing_behind(tmp_path, store):
    if store == "unwritable folder":
        uri = "sqlite:////sys/snnlstm-store/mlflow.db"  # sysfs: read-only for root too
    else:
        database = tmp_path / "store" / "mlflow.db"
        database.parent.mkdir()
        shutil.copyfile(empty_store(), database)
        if subprocess.run(["chattr", "+i", str(database)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not allowed here")
        uri = f"sqlite:///{database}"
    try:
        before = snapshot(tmp_path)
        outcome = run_verb(["train", *SMOKE, f"tracking.uri={uri}", f"paths.run_dir={tmp_path / 'runs'}", "run_name=ro"],
                           tmp_path)
    finally:
        if store == "read-only database":
            subprocess.run(["chattr", "-i", str(database)])
    assert outcome.code == 0 and outcome.lines == []
    warnings = [line for line in outcome.stderr.splitlines() if "][WARNING] - " in line]
    assert len(warnings) == 1 and "training goes on" in warnings[0] and "Traceback" not in outcome.stderr
    created = set(snapshot(tmp_path)) - set(before)
    assert all(path.startswith("runs") for path in created), created

"""Scale-out beyond one process: Hydra launchers (joblib, submitit) with one MLflow
parent run per multirun, and `snnlstm search` (Optuna ask/tell, sqlite, pruning,
continuing after a kill)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient

from conftest import BIN, CONFIG_MODULE, snnlstm

SMOKE = ["trainer=smoke", "task.seq_len=12", "task.val_size=8", "task.test_size=8", "model.hidden_size=16"]
# the trials of a search: the sine task, small enough for seconds per trial
SEARCH_TRAIN = ["experiment=paper/fig4/slstm", "trainer=smoke", "task.seq_len=12", "task.val_size=8",
                "task.test_size=8", "trainer.steps=40", "trainer.eval_every=4"]


def runs_of(run_dir: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("snnlstm")
    return client.search_runs([experiment.experiment_id])


def parent_and_children(run_dir: Path):
    runs = runs_of(run_dir)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1  # every other run is a child of this parent
    return parent, children


def test_parallel_multirun_nests_four_jobs_under_one_parent(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    snnlstm(["train", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", *SMOKE, "seed=0,1,2,3",
             f"paths.run_dir={run_dir}"], tmp_path, cli_env)
    parent, children = parent_and_children(run_dir)
    sweep_id = parent.data.tags["sweep_id"]
    assert parent.info.status == "FINISHED" and parent.data.tags["launcher"] == "JoblibLauncher"
    assert "seed=0,1,2,3" in parent.data.params["sweep.overrides"]
    assert sorted(c.data.tags["sweep_job"] for c in children) == ["0", "1", "2", "3"]
    assert sorted(c.data.tags["seed"] for c in children) == ["0", "1", "2", "3"]
    assert {c.data.tags["sweep_id"] for c in children} == {sweep_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    # two worker processes, neither of them the launching one
    workers = {c.data.tags["worker"] for c in children}
    assert len(workers) == 2 and parent.data.tags["worker"] not in workers
    # the parent's summary: job counts and the best job by the task's monitor (val/mse, lower is better)
    assert parent.data.metrics["sweep/jobs"] == 4 and parent.data.metrics["sweep/finished"] == 4
    best = min(children, key=lambda c: c.data.metrics["val/best_mse"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["sweep/best_mse"] == best.data.metrics["val/best_mse"]
    assert len(list((run_dir / "sine" / "multirun").glob("*/*/last.pt"))) == 4  # a run folder per job
    announcement = json.loads(next((run_dir / "sine" / "multirun").glob("*/mlflow_sweep.json")).read_text())
    assert announcement == {"sweep_id": sweep_id, "parent_run_id": parent.info.run_id}


def test_submitit_local_executor_runs_the_jobs(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    snnlstm(["train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", *SMOKE, "seed=0,1",
             f"paths.run_dir={run_dir}"], tmp_path, cli_env)
    parent, children = parent_and_children(run_dir)
    assert parent.info.status == "FINISHED" and parent.data.tags["launcher"] == "LocalLauncher"
    assert sorted(c.data.tags["sweep_job"] for c in children) == ["0", "1"]
    assert {c.info.status for c in children} == {"FINISHED"}
    sweep_dir = next((run_dir / "sine" / "multirun").iterdir())
    assert list(sweep_dir.glob(".submitit/*/*_result.pkl")), "submitit wrote no job results"
    assert all((sweep_dir / job / "last.pt").is_file() for job in ("0", "1"))


def test_slurm_preset_composes_to_submitit_slurm(tmp_path, cli_env):
    out = snnlstm(["train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra",
                   "--package", "hydra.launcher"], tmp_path, cli_env).stdout
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in out
    assert "partition: gpu" in out and "gpus_per_node: 1" in out and "timeout_min: 240" in out


def test_a_failed_job_fails_the_parent(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    result = snnlstm(["train", "-m", *SMOKE, "trainer.grad_clip=1.0,-1", f"paths.run_dir={run_dir}"], tmp_path,
                     cli_env, check=False)
    assert result.returncode == 2
    assert "trainer.grad_clip must be > 0" in result.stderr
    parent, children = parent_and_children(run_dir)
    assert parent.info.status == "FAILED"
    assert [c.info.status for c in children] == ["FINISHED"]  # job 0 ran; job 1 never started a run


# ----------------------------------------------------------------- snnlstm search
def search_args(run_dir: Path, *extra: str) -> list[str]:
    train = json.dumps(SEARCH_TRAIN)
    return ["search", "n_trials=3", "heartbeat_s=1", "pruner=none", f"space.train={train}", f"paths.run_dir={run_dir}",
            *extra]


def load_study(run_dir: Path, name: str = "sine") -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir / 'search' / name / 'optuna.db'}")


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


def test_search_killed_during_the_second_trial_continues(tmp_path, cli_env):
    """SIGKILL once the second trial has written a checkpoint; the same command
    then finishes the study: the first trial is kept, the second is retried with
    its parameters from its checkpoint (into its MLflow run), a third is added."""
    run_dir = tmp_path / "runs"
    checkpoint = run_dir / "search" / "sine" / "trial_1" / "last.pt"
    first = subprocess.Popen([str(BIN / "snnlstm"), *search_args(run_dir)], cwd=tmp_path, env=cli_env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and first.poll() is None:
            try:
                if checkpoint.exists() and states(load_study(run_dir)) == ["COMPLETE", "RUNNING"]:
                    break
            except Exception:  # the study does not exist yet
                pass
            time.sleep(0.1)
        assert first.poll() is None, "the search ended before it could be killed"
        assert states(load_study(run_dir)) == ["COMPLETE", "RUNNING"]
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    trial_0 = load_study(run_dir).trials[0]
    parent_before = [r for r in runs_of(run_dir) if "sweep_id" in r.data.tags and "mlflow.parentRunId" not in r.data.tags]

    out = snnlstm(search_args(run_dir), tmp_path, cli_env).stdout
    result = json.loads(out)
    study = load_study(run_dir)
    trials = study.trials
    assert result["trials"]["COMPLETE"] == 3 and states(study).count("COMPLETE") == 3
    # the first trial is kept as it was, not rerun
    assert trials[0].params == trial_0.params and trials[0].value == trial_0.value
    assert trials[0].datetime_complete == trial_0.datetime_complete
    # the killed trial is FAIL and retried with its parameters
    assert trials[1].state.name == "FAIL"
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert retry.state.name == "COMPLETE" and retry.params == trials[1].params
    assert min(retry.intermediate_values) > 4  # resumed after the first validation (step 4), not from step 0
    assert result["best_value"] == min(t.value for t in trials if t.value is not None)

    parent, children = parent_and_children(run_dir)
    assert [parent.info.run_id] == [r.info.run_id for r in parent_before]  # the same parent, reopened
    assert parent.info.status == "FINISHED" and parent.data.tags["launcher"] == "optuna"
    assert parent.data.metrics["search/best_value"] == result["best_value"]
    assert parent.data.tags["best_trial"] == str(result["best_trial"])
    # three runs, all finished: the retry went on in the killed trial's run
    assert sorted(c.data.tags["optuna_trial"] for c in children) == sorted(["0", "1", *(
        str(t.number) for t in trials if t.state.name == "COMPLETE" and t.number not in (0, retry.number))])
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["sweep_id"] for c in children} == {parent.data.tags["sweep_id"]}
    assert parent.data.metrics["sweep/finished"] == 3 and parent.data.metrics["sweep/running"] == 0


def test_search_stopped_by_sigterm_queues_its_trial_for_resuming(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    train = json.dumps([*SEARCH_TRAIN, "trainer.steps=2000"])
    search = subprocess.Popen([str(BIN / "snnlstm"), *search_args(run_dir, f"space.train={train}")], cwd=tmp_path,
                              env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoint = run_dir / "search" / "sine" / "trial_0" / "last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and search.poll() is None:
        time.sleep(0.1)
    search.send_signal(signal.SIGTERM)
    _, stderr = search.communicate(timeout=60)
    assert search.returncode == 130
    assert stderr.strip().splitlines()[-1].startswith("snnlstm search: the trial in flight was stopped by SIGTERM")
    trials = load_study(run_dir).trials
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]  # the retry is queued at once
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params
    parent, (child,) = parent_and_children(run_dir)
    assert parent.info.status == "KILLED" and child.info.status == "KILLED"
    assert parent.data.metrics["sweep/killed"] == 1 and parent.data.metrics["sweep/finished"] == 0


def test_search_prunes_a_trial_worse_than_the_median(tmp_path):
    """Trial 0 learns (lr 3e-2); trial 1 barely moves (lr 1e-9) and is pruned at its
    first validation, which is worse than trial 0's at the same step."""
    from snn_lstm.search import open_study, run_trials

    run_dir = tmp_path / "runs"
    space = {"name": "prune", "train": SEARCH_TRAIN, "params": {"optimizer.lr": {"type": "categorical",
                                                                                 "choices": [3e-2, 1e-9]}}}
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="search", overrides=[
            "n_trials=2", "pruner=median", "pruner_startup_trials=1", "tracking=none", f"paths.run_dir={run_dir}",
        ])
        folder = tmp_path / "study"
        study, storage, _ = open_study(cfg, "minimize", space, folder)
        study.enqueue_trial({"optimizer.lr": 3e-2})
        study.enqueue_trial({"optimizer.lr": 1e-9})
        run_trials(cfg, study, storage, space, folder, parent=None, sweep_id="test")
    first, second = study.trials[:2]
    assert first.state.name == "COMPLETE"
    assert second.state.name == "PRUNED" and list(second.intermediate_values) == [4]
    assert (folder / "trial_1" / "last.pt").exists()  # a pruned trial keeps its checkpoint


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "the search space has no params"),
        ({"optimizer.lr": {"type": "uniform", "low": 1, "high": 2}}, "needs type: one of float, int, categorical"),
        ({"optimizer.lr": {"type": "float", "low": 2, "high": 1}}, "needs numbers low < high"),
        ({"optimizer.lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "a log-scaled range needs low > 0"),
        ({"optimizer.lr": {"type": "float", "low": 1, "high": 2, "log": True, "step": 1}}, "either log: true or a step"),
        ({"optimizer.lr": {"type": "float", "low": 1, "high": 2, "scale": 3}}, "unknown keys ['scale']"),
        ({"model.name": {"type": "categorical", "choices": []}}, "needs a non-empty `choices` list"),
    ],
)
def test_malformed_space_entries_are_named(params, message):
    from snn_lstm.errors import UserError
    from snn_lstm.search import check_space

    with pytest.raises(UserError, match=re.escape(message)):
        check_space(params)


def test_search_bad_input_is_one_line(tmp_path, cli_env):
    result = snnlstm(["search", "space.params={optimizer.lr: {type: float, low: 2, high: 1}}",
                      f"paths.run_dir={tmp_path / 'runs'}"], tmp_path, cli_env, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "snnlstm search: error: space.params.optimizer.lr: needs numbers low < high, got low=2 high=1"]


@pytest.mark.parametrize("space", sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "space").glob("*.yaml")))
def test_every_shipped_space_composes(space):
    """Each conf/space file is well formed and its trial config composes (no training)."""
    from snn_lstm.config import to_plain
    from snn_lstm.search import check_space, first_values, trial_config

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="search", overrides=[f"space={space}"])
        params = to_plain(cfg.space.params)
        check_space(params)
        trial = trial_config(to_plain(cfg.space.train), first_values(params), cfg)
    assert trial.task.name and cfg.study == space


def test_search_space_from_the_users_config_dir(tmp_path, cli_env):
    """A space of one's own is a YAML file in <dir>/space/, passed with --config-dir;
    a key that `snnlstm train` does not have is refused before any trial starts."""
    (tmp_path / "mine" / "space").mkdir(parents=True)
    (tmp_path / "mine" / "space" / "colour.yaml").write_text(
        "name: colour\ntrain: [trainer=smoke]\nparams:\n  model.colour: {type: categorical, choices: [red, blue]}\n")
    result = snnlstm(["search", "--config-dir", str(tmp_path / "mine"), "space=colour",
                      f"paths.run_dir={tmp_path / 'runs'}"], tmp_path, cli_env, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("snnlstm search: error: Could not override 'model.colour'")
    assert not (tmp_path / "runs" / "search" / "colour" / "optuna.db").exists()

"""The installed `snnlstm` command, run as a user runs it: train, evaluate,
resume, MLflow contents and one-line errors (sweeps: test_sweeps.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from snn_lstm.checkpoint import save_checkpoint
from snn_lstm.recipes import compose_train, recipe_hash

from conftest import snnlstm

SMOKE = ["trainer=smoke", "task.seq_len=12", "task.val_size=8", "task.test_size=8", "model.hidden_size=16"]


def store(run_dir: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")


def only_run(client: MlflowClient):
    experiment = client.get_experiment_by_name("snnlstm")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_help_lists_the_verbs(tmp_path, cli_env):
    out = snnlstm(["--help"], tmp_path, cli_env).stdout
    assert "train" in out and "evaluate" in out


def test_unknown_verb_is_one_line(tmp_path, cli_env):
    result = snnlstm(["fly"], tmp_path, cli_env, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["snnlstm: error: unknown verb 'fly': choose one of train, evaluate, generate, export, search, bench, report, sync"]


def test_cfg_job_prints_the_composed_config(tmp_path, cli_env):
    out = snnlstm(["train", "--cfg", "job", "model=lstm", "seed=3"], tmp_path, cli_env).stdout
    assert "name: lstm" in out and "seed: 3" in out and "optimizer:" in out


def test_python_dash_m_works(tmp_path, cli_env):
    result = subprocess.run(
        [sys.executable, "-m", "snn_lstm.train", "--cfg", "job", "model/surrogate=atan"],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "surrogate: atan" in result.stdout and "alpha2: 1.4" in result.stdout


def test_train_then_evaluate_with_mlflow(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    out = snnlstm(["train", *SMOKE, f"paths.run_dir={run_dir}", "run_name=first"], tmp_path, cli_env)
    folder = run_dir / "sine" / "first"
    for name in ("last.pt", "best.pt", "config_resolved.yaml", ".hydra/config.yaml", "figures/sine_prediction.png"):
        assert (folder / name).exists(), name
    assert "mlflow.db" in out.stderr and "last.pt" in out.stderr  # it says where things are (logs go to stderr)

    checkpoint = torch.load(folder / "last.pt", weights_only=True)
    assert checkpoint["step"] == 4 and checkpoint["config"]["model"]["hidden_size"] == 16
    assert set(checkpoint) >= {"config", "model_args", "model", "optimizer", "rng", "tracking"}

    client = store(run_dir)
    run = only_run(client)
    assert checkpoint["tracking"]["run_id"] == run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["task"] == "sine" and run.data.tags["model"] == "slstm" and run.data.tags["seed"] == "0"
    assert run.data.tags["monitor"] == "mse" and run.data.tags["monitor_mode"] == "min"
    assert "mlflow.parentRunId" not in run.data.tags and "sweep_id" not in run.data.tags  # not a sweep: no parent
    assert run.data.tags["recipe"] == recipe_hash(compose_train(SMOKE))  # run_name and paths are not part of it
    assert run.data.tags["recipe"] != recipe_hash(compose_train([*SMOKE, "trainer.steps=5"]))
    assert run.data.tags["machine"].startswith("cpu: ")
    best_so_far = [m.value for m in client.get_metric_history(run.info.run_id, "val/best_mse")]
    assert best_so_far == sorted(best_so_far, reverse=True) and len(best_so_far) == 2  # after each validation
    assert run.data.params["model.hidden_size"] == "16" and run.data.params["model.alpha2"] == "0.3"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3, 4]
    assert {"val/mse", "test/mse", "test/baseline_mse"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config_resolved.yaml", "hydra", "checkpoints", "figures"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")} == {"checkpoints/last.pt", "checkpoints/best.pt"}
    png = Path(client.download_artifacts(run.info.run_id, "figures/sine_prediction.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    logged = run.data.metrics["test/mse"]
    evaluated = snnlstm(["evaluate", f"ckpt={folder / 'last.pt'}", f"paths.run_dir={run_dir}"], tmp_path, cli_env)
    printed = dict(line.split("=", 1) for line in evaluated.stdout.split() if line.startswith("test/"))
    assert float(printed["test/mse"]) == logged
    history = client.get_metric_history(run.info.run_id, "test/mse")
    assert [m.value for m in history] == [logged, logged]  # training's and evaluate's, same step
    assert client.get_run(run.info.run_id).info.status == "FINISHED"

    # a checkpoint from before the model group held the size and the surrogate still loads
    old = torch.load(folder / "last.pt", weights_only=True)
    model = old["model_args"]["model"]
    old["model_args"]["surrogate"] = {"name": model.pop("surrogate"), "alpha1": model.pop("alpha1"),
                                      "alpha2": model.pop("alpha2")}
    old["config"]["surrogate"] = dict(old["model_args"]["surrogate"])
    old["config"]["task"]["hidden_size"] = model["hidden_size"]
    for key in ("surrogate", "alpha1", "alpha2"):
        del old["config"]["model"][key]
    del old["digest"], old["format"]
    save_checkpoint(old, tmp_path / "old.pt")
    evaluated = snnlstm(["evaluate", f"ckpt={tmp_path / 'old.pt'}", "tracking=none"], tmp_path, cli_env)
    assert float(dict(line.split("=", 1) for line in evaluated.stdout.split())["test/mse"]) == logged


def test_resume_continues_to_the_same_weights(tmp_path, cli_env):
    """A run stopped after 4 steps and resumed to 8 ends where one 8-step run ends,
    in the same MLflow run."""
    run_dir = tmp_path / "runs"
    common = [*SMOKE, f"paths.run_dir={run_dir}", "trainer.eval_every=4"]
    snnlstm(["train", *common, "trainer.steps=8", "run_name=straight", "tracking=none"], tmp_path, cli_env)
    snnlstm(["train", *common, "trainer.steps=4", "run_name=stopped"], tmp_path, cli_env)
    snnlstm(["train", *common, "trainer.steps=8", "run_name=stopped", "resume=true"], tmp_path, cli_env)

    straight = torch.load(run_dir / "sine" / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(run_dir / "sine" / "stopped" / "last.pt", weights_only=True)
    assert resumed["step"] == straight["step"] == 8
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert resumed["metrics"] == straight["metrics"]

    client = store(run_dir)
    run = only_run(client)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(1, 9))


def test_resume_without_run_name_picks_the_newest_run(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    common = [*SMOKE, f"paths.run_dir={run_dir}", "tracking=none"]
    snnlstm(["train", *common, "trainer.steps=2"], tmp_path, cli_env)
    snnlstm(["train", *common, "trainer.steps=4", "resume=true"], tmp_path, cli_env)
    (folder,) = (run_dir / "sine").iterdir()
    assert torch.load(folder / "last.pt", weights_only=True)["step"] == 4


def test_resume_refuses_a_different_recipe(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    common = [*SMOKE, f"paths.run_dir={run_dir}", "tracking=none", "run_name=a"]
    snnlstm(["train", *common, "trainer.steps=2"], tmp_path, cli_env)
    result = snnlstm(["train", *common, "resume=true", "optimizer.lr=0.5"], tmp_path, cli_env, check=False)
    assert result.returncode == 2
    assert "optimizer.lr: 0.001 -> 0.5" in result.stderr and "Traceback" not in result.stderr

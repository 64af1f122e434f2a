"""Data-parallel training under torchrun (2 CPU processes, gloo)."""

from __future__ import annotations

import subprocess

import pytest
import torch
from mlflow.tracking import MlflowClient

from snn_lstm.distributed import Group, join
from snn_lstm.errors import UserError

from conftest import BIN, snnlstm

COMMON = ["trainer=smoke", "trainer.steps=3", "trainer.batch_size=8", "trainer.threads=1", "trainer.grad_clip=null"]


def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    snnlstm(["train", *COMMON, "tracking=none", f"paths.run_dir={run_dir}", "run_name=single"], tmp_path, cli_env)
    result = subprocess.run(
        [str(BIN / "torchrun"), "--nproc_per_node=2", "-m", "snn_lstm.train", *COMMON, f"paths.run_dir={run_dir}",
         "run_name=ddp"], cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    single = torch.load(run_dir / "sine" / "single" / "last.pt", weights_only=True)
    ddp = torch.load(run_dir / "sine" / "ddp" / "last.pt", weights_only=True)
    assert single["step"] == ddp["step"] == 3
    for name, tensor in single["model"].items():  # equal up to the order of the gradient sums
        torch.testing.assert_close(ddp["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    client = MlflowClient(tracking_uri="sqlite:///" + str(run_dir / "mlflow.db"))
    runs = client.search_runs([client.get_experiment_by_name("snnlstm").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # rank 0 alone tracks
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")] == [1, 2, 3]


def test_shards_are_contiguous_slices_of_the_global_batch():
    batch = torch.arange(8)
    assert Group(rank=1, world=2).shard(batch).tolist() == [4, 5, 6, 7] and Group().shard(batch) is batch


def test_the_global_batch_must_split_evenly_and_runs_share_a_folder(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="batch_size 7 must be a multiple of the 2 processes"):
        join(torch.device("cpu"), 7, "run")
    with pytest.raises(UserError, match="set run_name=NAME"):
        join(torch.device("cpu"), 8, None)

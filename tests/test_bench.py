"""`snnlstm bench` runs, prints the comparison table and logs it to MLflow."""

import time

import pytest
import torch
from mlflow.tracking import MlflowClient

from snn_lstm.bench import interleaved_medians_ms, saved_for_backward_bytes

from conftest import snnlstm

TINY = ["repeats=2", "warmup=1", "~shapes", "+shapes={tiny: {steps: 5, batch: 4, input: 3, hidden: 8, rate: 0.3}}",
        "engines=[auto,reference]", "matmul_dtypes=[float32,bfloat16]", "cells=[binary,graded_forget]"]


def test_bench_prints_and_logs_the_table(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    out = snnlstm(["bench", *TINY, f"paths.run_dir={run_dir}"], tmp_path, cli_env).stdout
    lines = [line for line in out.splitlines() if line.startswith("| tiny |")]
    # the reference and the analog cells have no bfloat16 products, so no bfloat16 row of them
    assert [line.split("|")[2].strip() for line in lines] == [
        "nn.LSTM", "slstm[auto->cpp]", "slstm[auto->cpp,bfloat16]", "slstm[reference]",
        "slstm[auto->cpp,graded_forget]", "slstm[reference,graded_forget]"]
    assert lines[0].split("|")[5].strip() == "1.00"  # nn.LSTM is the unit of the ratios
    firing = [line.split("|")[3].strip() for line in lines]
    assert firing[0].endswith(", -") and all(0 < float(f.split(", ")[1]) < 1 for f in firing[1:])  # h: spikes only
    (report,) = run_dir.glob("bench/*/bench.md")
    assert "| tiny | slstm[auto->cpp] |" in report.read_text()

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("snnlstm").experiment_id])
    assert run.data.tags["verb"] == "bench"
    metrics = run.data.metrics
    for model in ("slstm_auto_cpp", "slstm_auto_cpp_bfloat16", "slstm_reference"):
        for kind in ("train", "inference", "saved"):  # each ratio is to nn.LSTM's own measurement of the same kind
            value = metrics[f"bench/tiny/{model}/{kind}_{'mb' if kind == 'saved' else 'ms'}"]
            unit = metrics[f"bench/tiny/nn.LSTM/{kind}_{'mb' if kind == 'saved' else 'ms'}"]
            assert metrics[f"bench/tiny/{model}/{kind}_ratio"] == pytest.approx(value / unit)
    # the fused engine keeps the binary state as bits for backward; the reference keeps autograd's float tensors
    assert metrics["bench/tiny/slstm_auto_cpp/saved_mb"] < metrics["bench/tiny/slstm_reference/saved_mb"]
    printed = {line.split("|")[2].strip(): line.split("|") for line in lines}
    assert float(printed["slstm[reference]"][6]) == pytest.approx(metrics["bench/tiny/slstm_reference/train_ms"], abs=0.006)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["bench.md"]


def test_the_timer_takes_the_median_of_interleaved_runs():
    calls = []

    def sleeper(name: str, seconds: float):
        return lambda: (calls.append(name), time.sleep(seconds))

    ms = interleaved_medians_ms({"slow": sleeper("slow", 0.02), "fast": sleeper("fast", 0.0)}, repeats=3, warmup=1,
                                device=torch.device("cpu"))
    assert calls == ["slow", "fast"] + ["slow", "fast"] * 3  # warm-up of each, then in turn
    assert ms["slow"] >= 20 and ms["fast"] < ms["slow"]  # a sleep never ends early


def test_saved_bytes_count_each_storage_once():
    weight = torch.randn(64, 64, requires_grad=True)

    def forward():
        hidden = weight * 2.0  # mul saves nothing of its own for a constant factor
        return (hidden.sin() * hidden.sin()).sum()  # saves hidden (twice, one storage) and the two sines

    assert saved_for_backward_bytes(forward) == 3 * 64 * 64 * 4


def test_bench_rejects_a_bad_shape(tmp_path, cli_env):
    result = snnlstm(["bench", "repeats=1", "~shapes", "+shapes={bad: {steps: 0, batch: 1, input: 1, hidden: 1}}", "tracking=none",
                      f"paths.run_dir={tmp_path}"], tmp_path, cli_env, check=False)
    assert result.returncode == 2 and "shapes.bad" in result.stderr


def test_bench_times_a_trained_checkpoint_on_its_inputs(tmp_path, cli_env):
    run_dir = tmp_path / "runs"
    snnlstm(["train", "trainer=smoke", "tracking=none", f"paths.run_dir={run_dir}", "run_name=trained"], tmp_path, cli_env)
    out = snnlstm(["bench", *TINY[:2], "~shapes", "+shapes={tiny: {steps: 3, batch: 1, input: 20, hidden: 100}}",
                   f"ckpt={run_dir / 'sine' / 'trained' / 'last.pt'}", "ckpt_batches=[1,3]", "tracking=none",
                   f"paths.run_dir={run_dir}"], tmp_path, cli_env).stdout
    rows = {line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| trained_b")}
    assert rows == {"trained_b1", "trained_b3"}

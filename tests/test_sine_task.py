"""The sine task's data, encoding, baseline and determinism; and that training moves."""

import math

import pytest
import torch

from snn_lstm.data.sine import sine_mixture
from snn_lstm.models import build_model
from snn_lstm.tasks import build_task

from conftest import compose_train


def sine_cfg(**changes):
    cfg = {"name": "sine", "kind": "sine", "readout": "sequence", "hidden_size": 16, "seq_len": 40, "channels": 20, "dt": 0.1,
           "val_size": 64, "test_size": 64, "figure_steps": [0, 2]}
    return {**cfg, **changes}


def test_signal_formula():
    x = torch.tensor([0.0, math.pi / 6, 1.0])
    expected = [1.0, 0.5 * math.sin(math.pi / 2) + 0.5 * math.sin(math.pi) + 1, 0.5 * math.sin(3) + 0.5 * math.sin(6) + 1]
    torch.testing.assert_close(sine_mixture(x), torch.tensor(expected))


def test_batches_are_spikes_at_rate_f_over_2_with_next_step_targets():
    task = build_task(sine_cfg(seq_len=400), encoder="bernoulli", data_dir=".", seed=0, eval_limit=None)
    x, y = task.train_batch(0, 64)
    assert x.shape == (64, 400, 20) and y.shape == (64, 400, 1)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    # y_t = f(x_{t+1}); the spikes at t+1 fire with rate f(x_{t+1}) / 2 = y_t / 2
    rate = x[:, 1:].mean(-1)
    target_rate = y[:, :-1, 0] / 2
    assert (rate - target_rate).mean().abs() < 0.01
    assert torch.corrcoef(torch.stack([rate.flatten(), target_rate.flatten()]))[0, 1] > 0.6


def test_batches_depend_only_on_seed_and_step():
    a = build_task(sine_cfg(), encoder="bernoulli", data_dir=".", seed=0, eval_limit=None)
    b = build_task(sine_cfg(), encoder="bernoulli", data_dir=".", seed=0, eval_limit=None)
    c = build_task(sine_cfg(), encoder="bernoulli", data_dir=".", seed=1, eval_limit=None)
    assert torch.equal(a.train_batch(7, 8)[0], b.train_batch(7, 8)[0])
    assert not torch.equal(a.train_batch(7, 8)[0], a.train_batch(8, 8)[0])
    assert not torch.equal(a.train_batch(7, 8)[0], c.train_batch(7, 8)[0])


def test_baseline_is_the_mse_of_predicting_f_xt():
    task = build_task(sine_cfg(), encoder="bernoulli", data_dir=".", seed=0, eval_limit=None)
    model = build_model({"name": "lstm", "hidden_size": 4, "num_layers": 1}, 20, 1, "sequence")
    metrics = task.evaluate(model, "test", torch.device("cpu"))
    signal = task._eval_signals["test"]
    assert metrics["baseline_mse"] == pytest.approx(((signal[:, 1:] - signal[:, :-1]) ** 2).mean().item(), rel=1e-6)
    # with dt = 0.1: E[(f')^2] dt^2 = (9/8 + 9/2) * 0.01, about 0.056
    assert 0.04 < metrics["baseline_mse"] < 0.07


def test_a_short_training_lowers_the_validation_error(tmp_path):
    from snn_lstm.train import train

    cfg = compose_train(["experiment=paper/fig4/slstm", "task.seq_len=50", "trainer.steps=40", "trainer.eval_every=40",
                         "tracking=none", "trainer.progress=false", "trainer.eval_limit=128"])
    task = build_task(dict(cfg.task), encoder="bernoulli", data_dir=".", seed=0, eval_limit=128)
    torch.manual_seed(0)
    untrained = build_model(dict(cfg.model), 20, 1, "sequence")
    before = task.evaluate(untrained.eval(), "val", torch.device("cpu"))["mse"]
    after = train(cfg, tmp_path)
    assert after < 0.5 * before
    figure = tmp_path / "figures" / "sine_prediction.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"

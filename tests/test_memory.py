"""The memory/ metrics: how far back a trained classifier's gradient and cells reach."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snn_lstm.memory import gradient_by_step, held_share, lstm_forget_gates, memory_metrics, quarter_means
from snn_lstm.models import build_model


def test_quarter_means_split_the_steps_in_four():
    assert quarter_means(torch.arange(8.0)) == [0.5, 2.5, 4.5, 6.5]
    assert quarter_means(torch.tensor([1.0, 3.0])) == [1.0, 1.0, 3.0, 3.0]  # fewer steps than quarters


def test_held_share_counts_bits_held_without_a_break():
    c = torch.zeros(10, 1, 3)
    c[:, 0, 0] = 1  # held from step 0 on
    c[5:, 0, 1] = 1  # from step 5 on
    c[::2, 0, 2] = 1  # blinking
    # at steps t >= 4, the ones held since t - 3: unit 0 at all of 4..9, unit 1 at 8, 9; none of unit 2
    ones = 6 + 5 + 3  # units 0, 1, 2 at steps 4..9
    assert held_share(c, steps=4) == pytest.approx((6 + 2) / ones)
    assert held_share(torch.zeros(10, 1, 3), steps=4) == 0.0


def test_gradient_by_step_sees_only_the_steps_the_readout_depends_on():
    model = build_model({"name": "lstm", "hidden_size": 6, "num_layers": 1}, 2, 3, "last")
    x, y = torch.randn(4, 12, 2), torch.tensor([0, 1, 2, 0])
    grads = gradient_by_step(model, x, y, F.cross_entropy)
    assert grads.shape == (12,) and bool((grads > 0).all())
    assert grads[-1] > grads[0]  # the forget gates (about 0.5 at init) shrink what the first step can do
    assert all(p.grad is None for p in model.parameters())  # a probe, not a training step


def test_lstm_forget_gates_are_what_an_lstm_cell_computes():
    torch.manual_seed(1)
    lstm = nn.LSTM(3, 5, num_layers=2)
    x = torch.randn(7, 2, 3)
    gates = lstm_forget_gates(lstm, x)
    layer_input = x
    for layer in range(2):
        cell = nn.LSTMCell(layer_input.shape[-1], 5)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(lstm, f"{name}_l{layer}"))
        h = c = torch.zeros(2, 5)
        outputs = []
        for t in range(7):
            a = F.linear(layer_input[t], cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
            assert torch.allclose(gates[layer][t], torch.sigmoid(a[:, 5:10]), atol=1e-6)
            h, c = cell(layer_input[t], (h, c))
            outputs.append(h)
        layer_input = torch.stack(outputs).detach()


@pytest.mark.parametrize("name", ["slstm", "lstm"])
def test_memory_metrics_of_both_backbones(name):
    torch.manual_seed(2)
    model = build_model({"name": name, "hidden_size": 16, "num_layers": 1, "forget_bias": 3.0}, 1, 4, "mean")
    x, y = (torch.rand(8, 120, 1) < 0.3).float(), torch.randint(0, 4, (8,))
    metrics = memory_metrics(model, x, y, F.cross_entropy)
    assert model.training  # left as it was
    quarters = [metrics[f"memory/grad_q{k}"] for k in range(1, 5)]
    assert all(value >= 0 for value in quarters) and metrics["memory/grad_q1_over_q4"] == pytest.approx(quarters[0] / quarters[3])
    forget = [metrics[f"memory/l0/forget_q{k}"] for k in range(1, 5)]
    if name == "slstm":
        assert forget == [1.0] * 4  # b_f = 3 opens every binary forget gate
        assert 0.0 < metrics["memory/l0/held_100"] <= 1.0 and metrics["memory/l0/c_flips_per_100"] >= 0
    else:
        assert all(1 / (1 + math.exp(-3.0)) - 0.2 < value < 1.0 for value in forget)
        assert "memory/l0/held_100" not in metrics

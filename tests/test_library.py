"""The layer as a library: torch.nn.LSTM's and torch.nn.LSTMCell's signatures and
behaviour, errors of the kinds Python users expect, an import that loads torch and
nothing of the app, and the README's examples, run as they stand."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import snn_lstm
from snn_lstm import SpikingLSTM, SpikingLSTMCell

README = Path(__file__).resolve().parents[1] / "README.md"


def binary(t: torch.Tensor) -> bool:
    return set(t.unique().tolist()) <= {0.0, 1.0}


def test_nn_lstm_positional_arguments_and_shapes():
    plain = nn.LSTM(28, 16, 2, False, True, 0.0)
    spiking = SpikingLSTM(28, 16, 2, False, True, 0.0)
    assert [n for n, _ in spiking.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert spiking.bias is False and spiking.batch_first is True
    x = (torch.rand(5, 7, 28) < 0.3).float()  # [B, T, I]
    (out, (h, c)), (plain_out, (plain_h, plain_c)) = spiking(x), plain(x)
    assert out.shape == plain_out.shape == (5, 7, 16) and h.shape == plain_h.shape == c.shape == plain_c.shape == (2, 5, 16)
    assert binary(out) and binary(h) and binary(c) and torch.equal(out[:, -1], h[-1])


def test_unbatched_input_and_state():
    layer = SpikingLSTM(4, 6, 2, init="normal")
    x = (torch.rand(9, 4) < 0.5).float()
    out, (h, c) = layer(x)
    assert out.shape == (9, 6) and h.shape == c.shape == (2, 6)
    batched, (bh, bc) = layer(x.unsqueeze(1))
    assert torch.equal(out, batched[:, 0]) and torch.equal(h, bh[:, 0]) and torch.equal(c, bc[:, 0])
    again, _ = layer(x, (h, c))  # a given unbatched state
    assert again.shape == (9, 6)


def test_batch_first_equals_time_major():
    torch.manual_seed(0)
    time_major = SpikingLSTM(3, 5, init="normal")
    batch_first = SpikingLSTM(3, 5, batch_first=True, init="normal")
    batch_first.load_state_dict(time_major.state_dict())
    x = (torch.rand(8, 4, 3) < 0.5).float()
    assert torch.equal(batch_first(x.transpose(0, 1))[0], time_major(x)[0].transpose(0, 1))


def test_dropout_between_layers_in_training_only():
    torch.manual_seed(0)
    layer = SpikingLSTM(6, 32, 2, dropout=0.5, init="normal")
    same = SpikingLSTM(6, 32, 2, init="normal")
    same.load_state_dict(layer.state_dict())
    x = (torch.rand(10, 4, 6) < 0.5).float()
    layer.eval()
    assert torch.equal(layer(x)[0], same(x)[0])
    layer.train()
    torch.manual_seed(1)
    assert not torch.equal(layer(x)[0], same(x)[0])


def test_device_and_dtype_and_to():
    layer = SpikingLSTM(3, 4, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in layer.parameters())
    out, _ = layer(torch.ones(2, 1, 3, dtype=torch.float64))
    assert out.dtype == torch.float64
    cell = SpikingLSTMCell(3, 4, dtype=torch.float64)
    assert cell.weight_ih.dtype == torch.float64


@pytest.mark.parametrize("make, error, match", [
    (lambda: SpikingLSTM(28.5, 16), TypeError, "input_size must be an int"),
    (lambda: SpikingLSTM(28, True), TypeError, "hidden_size must be an int"),
    (lambda: SpikingLSTM(28, 16, 0), ValueError, "num_layers must be a positive integer"),
    (lambda: SpikingLSTM(28, 16, 1, "yes"), TypeError, "bias must be True or False"),
    (lambda: SpikingLSTM(28, 16, dropout=1.5), ValueError, "dropout must be a number in"),
    (lambda: SpikingLSTM(28, 16, bidirectional=True), ValueError, "bidirectional"),
    (lambda: SpikingLSTM(28, 16, proj_size=4), ValueError, "proj_size"),
    (lambda: SpikingLSTM(28, 16, theta1=1.0), ValueError, "theta1"),
    (lambda: SpikingLSTM(28, 16, surrogate="relu"), ValueError, "unknown surrogate"),
    (lambda: SpikingLSTM(28, 16, engine="fastest"), ValueError, "engine"),
    (lambda: SpikingLSTMCell(28, 16, bias=1), TypeError, "bias must be True or False"),
    (lambda: SpikingLSTM(3, 4)(torch.zeros(2, 5)), ValueError, "expected input"),
    (lambda: SpikingLSTM(3, 4)(torch.zeros(0, 2, 3)), ValueError, "no time steps"),
    (lambda: SpikingLSTM(3, 4)(torch.zeros(2, 2, 3), (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4))), ValueError,
     "h_0 and c_0"),
])
def test_bad_arguments_raise_the_errors_python_users_expect(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_the_cell_has_nn_lstm_cells_signature():
    torch.manual_seed(0)
    plain = nn.LSTMCell(4, 6, False)
    cell = SpikingLSTMCell(4, 6, False, init="normal")
    assert [n for n, _ in cell.named_parameters()] == [n for n, _ in plain.named_parameters()]
    x = (torch.rand(3, 4) < 0.5).float()
    h, c = cell(x)
    assert h.shape == c.shape == (3, 6) and binary(h) and binary(c)
    h1, c1 = cell(x[0])  # unbatched
    assert torch.equal(h1, h[0]) and torch.equal(c1, c[0])
    layer = SpikingLSTM(4, 6, bias=False, init="normal")
    layer.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    assert torch.equal(layer(x.unsqueeze(0))[0][0], h)


def test_the_package_exports_the_layer():
    assert snn_lstm.SpikingLSTM is snn_lstm.spiking.SpikingLSTM and snn_lstm.SpikingLSTMCell.__doc__
    assert "theta1" in SpikingLSTM.__doc__ and "batch_first" in SpikingLSTM.__doc__


def test_importing_the_layer_loads_nothing_of_the_app():
    code = ("import sys, snn_lstm, torch; snn_lstm.SpikingLSTM(2, 3)(torch.zeros(4, 1, 2)); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'omegaconf', 'mlflow', 'kymatio', "
            "'datasets', 'optuna', 'gensim', 'torchaudio', 'soundfile', 'matplotlib', 'yaml'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def readme_examples() -> list[str]:
    text = README.read_text()
    section = text.split("## Use the layer in your own code", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.parametrize("number", range(2))
def test_the_readmes_examples_run(number):
    examples = readme_examples()
    assert len(examples) == 2
    exec(compile(examples[number], f"README example {number + 1}", "exec"), {})

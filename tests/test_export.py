"""`snnlstm export`: the ONNX graphs (run by onnxruntime) and the NIR graph (run by
nirtorch's executor, not ours) of a small trained model give, on the test split, the
spikes and the accuracy PyTorch gives."""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import onnxruntime
import pytest
import torch

from snn_lstm.checkpoint import load_checkpoint, save_checkpoint
from snn_lstm.encoders import SPLIT_STREAMS, make_generator
from snn_lstm.export import run_nir
from snn_lstm.models import model_from_checkpoint
from snn_lstm.tasks import build_task

from conftest import TINY_IMAGES, run_verb


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data_dir) -> dict:
    """A spiking LSTM trained for a few steps on the tiny image set; and its weights on a
    grid of 1/64, where every sum of a step is exact in float32, whatever the order."""
    root = tmp_path_factory.mktemp("export")
    outcome = run_verb(["train", "task=smnist", *TINY_IMAGES, "trainer=smoke", "trainer.steps=600", "trainer.eval_every=600",
                        "trainer.eval_limit=null", "trainer.batch_size=16", "optimizer.lr=0.01", "task.readout=mean",
                        "model.hidden_size=64", "model.num_layers=2", "tracking=none", f"paths.run_dir={root / 'runs'}",
                        f"paths.data_dir={tiny_data_dir}", "run_name=small"], root)
    assert outcome.code == 0, outcome.stderr[-3000:]
    trained_path = root / "runs" / "smnist" / "small" / "last.pt"
    checkpoint = load_checkpoint(trained_path)
    checkpoint["model"] = {name: (value * 64).round() / 64 for name, value in checkpoint["model"].items()}
    grid_path = save_checkpoint(checkpoint, root / "grid.pt")
    return {"root": root, "trained": trained_path, "grid": grid_path, "data": tiny_data_dir}


def exported(trained: dict, ckpt: Path, fmt: str, dtype: str) -> list[Path]:
    outcome = run_verb(["export", f"ckpt={ckpt}", f"format={fmt}", f"dtype={dtype}",
                        f"paths.run_dir={trained['root'] / 'runs'}"], trained["root"])
    assert outcome.code == 0, outcome.stderr[-3000:]
    assert "gives the same spikes as PyTorch" in outcome.stderr
    return [Path(line) for line in outcome.stdout.split()]


def evaluated_on_the_test_split(ckpt: Path, data_dir: Path, dtype: torch.dtype):
    """The model, and the test split encoded as evaluation encodes it (draw 0), [T, B, I]."""
    checkpoint = load_checkpoint(ckpt)
    config = checkpoint["config"]
    task = build_task(config["task"], encoder=config["encoder"]["name"], data_dir=str(data_dir), seed=config["seed"],
                      eval_limit=None)
    values = task.values("test", slice(0, len(task.labels["test"])))
    x = task.encoder(values, make_generator(0, SPLIT_STREAMS["test"], 0)).transpose(0, 1).to(dtype)
    model = model_from_checkpoint(checkpoint).to(dtype).eval()
    with torch.no_grad():
        output = model.backbone(x)[0]
        logits = model(x.transpose(0, 1))[0]  # the model's readout: the mean of h over the steps
    accuracy = (logits.argmax(-1) == task.labels["test"]).double().mean().item()
    return model, x, output, task.labels["test"], accuracy


@pytest.mark.parametrize("which, dtype", [("grid", "float32"), ("trained", "float64")])
def test_onnx_runs_the_test_split_as_pytorch_does(trained, which, dtype):
    sequence, step = exported(trained, trained[which], "onnx", dtype)
    model, x, output, labels, accuracy = evaluated_on_the_test_split(trained[which], trained["data"], getattr(torch, dtype))
    session = onnxruntime.InferenceSession(str(sequence), providers=["CPUExecutionProvider"])
    spikes, h_n, c_n, logits = (torch.from_numpy(v) for v in session.run(None, {"x": x.numpy()}))
    assert spikes.shape == output.shape and torch.equal(spikes, output)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0} and 0 < spikes.mean() < 1
    theirs = (logits.argmax(-1) == labels).double().mean().item()
    assert theirs == accuracy and accuracy >= 0.2  # twice chance: the model learnt something
    # the step graph, fed one step at a time, walks the same path
    stepper = onnxruntime.InferenceSession(str(step), providers=["CPUExecutionProvider"])
    h = c = np.zeros((2, x.shape[1], 64), dtype=x.numpy().dtype)
    for t in range(x.shape[0]):
        h, c, step_logits = stepper.run(None, {"x": x[t].numpy(), "h": h, "c": c})
        assert np.array_equal(h[-1], output[t].numpy())
    assert np.array_equal(h, h_n.numpy()) and np.array_equal(c, c_n.numpy())


def test_nir_runs_the_test_split_as_pytorch_does(trained):
    (path,) = exported(trained, trained["grid"], "nir", "float32")
    graph = nir.read(path)
    assert {type(node).__name__ for node in graph.nodes.values()} == {"Input", "Output", "Affine", "Linear", "Threshold"}
    model, x, output, labels, accuracy = evaluated_on_the_test_split(trained["grid"], trained["data"], torch.float32)
    result = run_nir(graph, x)
    assert torch.equal(result["output"], output)
    theirs = (result["readouts"].mean(0).argmax(-1) == labels).double().mean().item()  # readout=mean
    assert theirs == accuracy and accuracy >= 0.2


def test_export_refuses_a_plain_lstm(trained, tmp_path):
    outcome = run_verb(["train", "task=smnist", *TINY_IMAGES, "model=lstm", "trainer=smoke", "tracking=none",
                        f"paths.run_dir={tmp_path}", f"paths.data_dir={trained['data']}", "run_name=plain"], tmp_path)
    assert outcome.code == 0
    refused = run_verb(["export", f"ckpt={tmp_path / 'smnist' / 'plain' / 'last.pt'}", f"paths.run_dir={tmp_path}"],
                       tmp_path)
    assert refused.code == 2 and "plain LSTM" in refused.lines[0]


@pytest.mark.parametrize("cell, write_scale", [("leaky", 1.0), ("graded_forget", 0.5)])
def test_analog_cells_export_to_onnx_and_not_to_nir(trained, tmp_path, cell, write_scale):
    outcome = run_verb(["train", "task=smnist", *TINY_IMAGES, f"model.cell={cell}", f"model.write_scale={write_scale}",
                        "model.hidden_size=16",
                        "trainer=smoke", "tracking=none", f"paths.run_dir={tmp_path}", f"paths.data_dir={trained['data']}",
                        "run_name=analog"], tmp_path)
    assert outcome.code == 0, outcome.stderr[-3000:]
    ckpt = tmp_path / "smnist" / "analog" / "last.pt"
    sequence, _ = exported({"root": tmp_path}, ckpt, "onnx", "float64")
    model, x, output, _, _ = evaluated_on_the_test_split(ckpt, trained["data"], torch.float64)
    session = onnxruntime.InferenceSession(str(sequence), providers=["CPUExecutionProvider"])
    spikes, _, c_n, _ = (torch.from_numpy(v) for v in session.run(None, {"x": x.numpy()}))
    assert torch.equal(spikes, output) and 0 < spikes.mean() < 1
    with torch.no_grad():
        ours = model.backbone(x)[1][1]
    torch.testing.assert_close(c_n, ours)
    assert ((c_n > 0) & (c_n < 1)).any()  # the cells hold real values
    refused = run_verb(["export", f"ckpt={ckpt}", "format=nir", f"paths.run_dir={tmp_path}"], tmp_path)
    assert refused.code == 2 and "format=onnx" in refused.lines[0]

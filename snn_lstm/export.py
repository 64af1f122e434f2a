"""`snnlstm export ckpt=PATH format=onnx|nir`: a trained spiking LSTM out of Python.

onnx  two files, read by onnxruntime or any ONNX runtime (opset 17):
        model.sequence.onnx  x [T, B, I] -> output [T, B, H] (the last layer's spikes), h_n and
                             c_n [L, B, H], logits ([B, C]; [T, B, C] for readout=sequence),
                             from a zero state; an ONNX Loop, so any T and B
        model.step.onnx      (x [B, I], h [L, B, H], c [L, B, H]) -> (h', c', logits [B, C]):
                             one step, for a stream fed step by step
        (every cell, model.cell=leaky and graded_forget too)
nir   model.nir (the binary cell only): the cell as Boolean logic, in the nodes of the Neuromorphic Intermediate
      Representation (Affine, Linear, Threshold; NIR's Threshold is z = 1 if v > threshold):
        gates  = Threshold(theta)(Affine(W_ih, b_ih + b_hh) x_t + Linear(W_hh) h_{t-1})   [i, f, g, o]
        keep   = Threshold(1.5)(Linear(select f) gates + c_{t-1})      AND(f, c_{t-1})
        write  = Threshold(1.5)(Linear(select i + g) gates)           AND(i, g)
        c      = Threshold(0.5)(keep + write)                          OR: c_t
        h      = Threshold(1.5)(Linear(select o) gates + c_t)          AND(o, c_t): h_t
        readout = Affine(W_out, b_out) h_t
      (the nodes of layer k are named l<kk>_<n>_<part>, n their place in a step: 0_input, 1_recurrent,
      2_gates, 3_keep_gate, 4_keep, 5_write_gates, 6_write, 7_c, 8_open_gate, 9_h)
      AND(p, q) = H(p + q - 1.5) and OR(p, q) = H(p + q - 0.5) are exact for p, q in {0, 1}.
      Time: the graph is run once per time step, its nodes in the order of their names.
      The two edges that close a cycle, h -> recurrent (into the gates) and c -> keep,
      carry the value of the previous step (0 before the first); every other edge
      carries the current step's. A node's input is the sum of its incoming edges. The readout is given at
      every step; the model's own readout is its last value (readout=last) or its mean
      over the steps (readout=mean: the readout is affine).

Both take the network's inputs (the spikes the encoder draws, or the values themselves
with encoder=identity), in float32 (or float64: dtype=float64). Before an export is
reported, another runtime runs it on random spike trains (onnxruntime, or nirtorch's
NIR executor) and must give the spikes the PyTorch model gives.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch import Tensor, nn

from snn_lstm.checkpoint import load_checkpoint, reading
from snn_lstm.config import CONFIG_PATH
from snn_lstm.errors import UserError, reports_user_errors, run_reporting_errors
from snn_lstm.models import SequenceModel, model_from_checkpoint
from snn_lstm.spiking import SpikingLSTM

log = logging.getLogger("snnlstm.export")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
CHECK_STEPS, CHECK_BATCH = 12, 8  # the random spike trains every export is checked on


# ----------------------------------------------------------------- plain-op modules (what ONNX records)
class ExportLayer(nn.Module):
    """One spiking LSTM layer's step in plain tensor ops: the forward of lstm.py, no surrogates.
    The analog cells: phi = decay * f (leaky) or sigmoid(a_f) (graded_forget), c = min(phi c + w i g, 1),
    h = o H(c - theta1)."""

    __constants__ = ["cell", "theta_cell", "write_scale"]

    def __init__(self, lstm: SpikingLSTM, layer: int):
        super().__init__()
        self.cell, self.theta_cell = lstm.spike.cell, float(lstm.spike.theta1)
        self.write_scale = float(lstm.spike.write_scale)
        decay_logit = lstm.layer_decay_logit(layer)
        decay = torch.zeros(lstm.hidden_size) if decay_logit is None else torch.sigmoid(decay_logit.detach())
        w_ih, w_hh, b_ih, b_hh = (p.detach().clone() if p is not None else None for p in lstm.layer_parameters(layer))
        bias = torch.zeros(w_ih.shape[0], dtype=w_ih.dtype) if b_ih is None else b_ih + b_hh
        hidden = lstm.hidden_size
        theta = torch.tensor([lstm.spike.theta1] * 2 * hidden + [lstm.spike.theta2] * hidden + [lstm.spike.theta1] * hidden)
        for name, value in (("w_ih", w_ih), ("w_hh", w_hh), ("bias", bias), ("theta", theta.to(w_ih.dtype)),
                            ("decay", decay.to(w_ih.dtype))):
            self.register_buffer(name, value)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        a = x @ self.w_ih.t() + h @ self.w_hh.t() + self.bias
        i, f, g, o = (a > self.theta).to(x.dtype).chunk(4, -1)
        if self.cell == "binary":
            c = (f * c + i * g > 0).to(x.dtype)
            return o * c, c
        phi = self.decay * f if self.cell == "leaky" else torch.sigmoid(a.chunk(4, -1)[1])
        c = torch.clamp(phi * c + self.write_scale * (i * g), max=1.0)
        return o * (c > self.theta_cell).to(x.dtype), c


class ExportStep(nn.Module):
    """(x_t [B, I], h [L, B, H], c [L, B, H]) -> (h', c', logits [B, C])."""

    def __init__(self, model: SequenceModel):
        super().__init__()
        self.layers = nn.ModuleList(ExportLayer(model.backbone, k) for k in range(model.backbone.num_layers))
        self.readout = model.readout

    @torch.jit.export
    def advance(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        hs, cs = [], []
        for index, layer in enumerate(self.layers):
            x, c_k = layer(x, h[index], c[index])
            hs.append(x)
            cs.append(c_k)
        return torch.stack(hs), torch.stack(cs)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h, c = self.advance(x, h, c)
        return h, c, self.readout(h[-1])


class ExportSequence(nn.Module):
    """x [T, B, I] -> (output [T, B, H], h_n, c_n, logits) from a zero state."""

    __constants__ = ["readout_mode"]

    def __init__(self, model: SequenceModel):
        super().__init__()
        self.step = ExportStep(model)
        self.readout_mode = model.readout_mode
        self.layers, self.hidden = model.backbone.num_layers, model.backbone.hidden_size

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        h = x.new_zeros(self.layers, x.shape[1], self.hidden)
        c = x.new_zeros(self.layers, x.shape[1], self.hidden)
        outputs = []
        for t in range(x.shape[0]):
            h, c = self.step.advance(x[t], h, c)
            outputs.append(h[-1])
        output = torch.stack(outputs)
        if self.readout_mode == "last":
            logits = self.step.readout(output[-1])
        elif self.readout_mode == "mean":
            logits = self.step.readout(output.mean(0))
        else:
            logits = self.step.readout(output)
        return output, h, c, logits


def export_onnx(model: SequenceModel, folder: Path) -> list[Path]:
    with warnings.catch_warnings():  # TorchScript is deprecated, and the way to an ONNX Loop over the steps
        warnings.simplefilter("ignore")
        sequence = torch.jit.script(ExportSequence(model).eval())
        step = torch.jit.script(ExportStep(model).eval())
    layers, hidden, inputs = model.backbone.num_layers, model.backbone.hidden_size, model.backbone.input_size
    dtype = next(model.parameters()).dtype
    x = torch.zeros(CHECK_STEPS, CHECK_BATCH, inputs, dtype=dtype)
    state = torch.zeros(layers, CHECK_BATCH, hidden, dtype=dtype)
    paths = [folder / "model.sequence.onnx", folder / "model.step.onnx"]
    with warnings.catch_warnings():  # the TorchScript exporter, the one that writes a Loop for the time steps
        warnings.simplefilter("ignore")
        torch.onnx.export(sequence, (x,), paths[0], dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["output", "h_n", "c_n", "logits"],
                          dynamic_axes={"x": {0: "steps", 1: "batch"}, "output": {0: "steps", 1: "batch"},
                                        "h_n": {1: "batch"}, "c_n": {1: "batch"}, "logits": {0: "batch"}})
        torch.onnx.export(step, (x[0], state, state), paths[1], dynamo=False, opset_version=17,
                          input_names=["x", "h", "c"], output_names=["h_next", "c_next", "logits"],
                          dynamic_axes={name: {axis: "batch"} for name, axis in
                                        (("x", 0), ("h", 1), ("c", 1), ("h_next", 1), ("c_next", 1), ("logits", 0))})
    return paths


def run_onnx(path: Path, x: Tensor) -> dict[str, Tensor]:
    """The sequence graph's outputs on x [T, B, I], computed by onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError("checking an ONNX export needs onnxruntime: pip install 'snnlstm[export]'") from None
    onnxruntime.set_default_logger_severity(3)  # its notes on renamed initializers are not ours to show
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return {name: torch.from_numpy(value) for name, value in zip(names, session.run(None, {"x": x.numpy()}))}


# ----------------------------------------------------------------- NIR
# A layer's nodes in the order of a step. NIR files keep nodes sorted by name, and
# executors such as nirtorch's run them in file order, taking the previous step's
# value on an edge whose source comes later: the names sort in this order.
NIR_PARTS = ("input", "recurrent", "gates", "keep_gate", "keep", "write_gates", "write", "c", "open_gate", "h")


def nir_graph(model: SequenceModel):
    """The model as a NIRGraph (module docstring)."""
    import nir
    import numpy as np

    lstm = model.backbone
    hidden = lstm.hidden_size
    eye = np.eye(hidden)
    zero = np.zeros((hidden, hidden))
    select = {gate: np.concatenate([eye if k == gate else zero for k in range(4)], axis=1) for gate in range(4)}
    as_array = lambda t: t.detach().cpu().numpy()  # noqa: E731
    dtype = as_array(lstm.weight_hh_l0).dtype
    nodes = {"input": nir.Input(input_type=np.array([lstm.input_size]))}
    edges = []
    source = "input"
    for layer in range(lstm.num_layers):
        step = ExportLayer(lstm, layer)
        name = lambda part: f"l{layer:02d}_{NIR_PARTS.index(part)}_{part}"  # noqa: E731
        nodes.update({
            name("input"): nir.Affine(weight=as_array(step.w_ih), bias=as_array(step.bias)),
            name("recurrent"): nir.Linear(weight=as_array(step.w_hh)),
            name("gates"): nir.Threshold(threshold=as_array(step.theta)),
            name("keep_gate"): nir.Linear(weight=select[1].astype(dtype)),
            name("keep"): nir.Threshold(threshold=np.full(hidden, 1.5, dtype)),
            name("write_gates"): nir.Linear(weight=(select[0] + select[2]).astype(dtype)),
            name("write"): nir.Threshold(threshold=np.full(hidden, 1.5, dtype)),
            name("c"): nir.Threshold(threshold=np.full(hidden, 0.5, dtype)),
            name("open_gate"): nir.Linear(weight=select[3].astype(dtype)),
            name("h"): nir.Threshold(threshold=np.full(hidden, 1.5, dtype)),
        })
        edges += [(source, name("input")), (name("input"), name("gates")), (name("h"), name("recurrent")),
                  (name("recurrent"), name("gates")), (name("gates"), name("keep_gate")), (name("keep_gate"), name("keep")),
                  (name("c"), name("keep")), (name("gates"), name("write_gates")), (name("write_gates"), name("write")),
                  (name("keep"), name("c")), (name("write"), name("c")), (name("gates"), name("open_gate")),
                  (name("open_gate"), name("h")), (name("c"), name("h"))]
        source = name("h")
    nodes["readout"] = nir.Affine(weight=as_array(model.readout.weight), bias=as_array(model.readout.bias))
    nodes["output"] = nir.Output(output_type=np.array([model.readout.out_features]))
    edges += [(source, "readout"), ("readout", "output")]
    metadata = {"source": "snnlstm", "readout": model.readout_mode,
                "time": "one step per run, nodes in the order of their names; <layer>_9_h -> <layer>_1_recurrent and "
                        "<layer>_7_c -> <layer>_4_keep carry the previous step's value (0 at the first step), every "
                        "other edge the current step's"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


class NirThreshold(nn.Module):
    """NIR's Threshold node for nirtorch: z = 1 if v > threshold else 0."""

    def __init__(self, node):
        super().__init__()
        self.register_buffer("threshold", torch.from_numpy(node.threshold))

    def forward(self, v: Tensor) -> Tensor:
        return (v > self.threshold).to(v.dtype)


def _affine(node) -> nn.Linear:
    linear = nn.Linear(node.weight.shape[1], node.weight.shape[0])
    linear.weight.data, linear.bias.data = torch.from_numpy(node.weight), torch.from_numpy(node.bias)
    return linear


def run_nir(graph, x: Tensor) -> dict[str, Tensor]:
    """nirtorch's executor stepped over x [T, B, I]: the last layer's spikes and the readouts."""
    try:
        import nir
        import nirtorch
    except ImportError:
        raise UserError("checking a NIR export needs nirtorch: pip install 'snnlstm[export]'") from None
    executor = nirtorch.nir_to_torch(graph, {nir.Threshold: NirThreshold, nir.Affine: _affine})
    last = max(name for name in graph.nodes if name.endswith("_h"))
    state, spikes, readouts = None, [], []
    x = x.to(torch.float32)  # nirtorch starts its recurrent edges from float32 zeros
    with torch.no_grad():
        for x_t in x:
            readout, state = executor(x_t, state)
            spikes.append(state[f"{last}_prev_output"])
            readouts.append(readout)
    return {"output": torch.stack(spikes), "readouts": torch.stack(readouts)}


# ----------------------------------------------------------------- the verb
def check_against_pytorch(model: SequenceModel, theirs: Tensor, x: Tensor, runtime: str) -> str:
    """`theirs`, the last layer's spikes another runtime computed for x, against ours."""
    with torch.no_grad():
        ours = model.backbone(x)[0]
    same = (ours == theirs.to(ours.dtype)).double().mean().item()
    if same < 0.99:
        raise RuntimeError(f"{runtime} gives other spikes than PyTorch for {1 - same:.1%} of them")
    return (f"{runtime} gives the same spikes as PyTorch on {x.shape[1]} random spike trains of {x.shape[0]} steps"
            + ("" if same == 1.0 else f" but {1 - same:.3%} of them (float32 rounding at a threshold: dtype=float64 "
                                      "gives identical ones)"))


def export(cfg: DictConfig, out_dir: Path) -> list[Path]:
    for package in {"onnx": ("onnx", "onnxruntime"), "nir": ("nir", "nirtorch")}[cfg.format]:
        if importlib.util.find_spec(package) is None:
            raise UserError(f"format={cfg.format} needs {package}, which this installation lacks: "
                            "pip install 'snnlstm[export]'")
    checkpoint = load_checkpoint(cfg.ckpt)
    with reading(cfg.ckpt):
        model = model_from_checkpoint(checkpoint, f"checkpoint {cfg.ckpt}")
    if not isinstance(model.backbone, SpikingLSTM):
        raise UserError(f"{cfg.ckpt} holds a plain LSTM; export writes spiking LSTMs (ONNX has its own LSTM operator "
                        "for the other: torch.onnx.export)")
    if cfg.format == "nir" and model.backbone.spike.cell != "binary":
        raise UserError(f"{cfg.ckpt} holds a spiking LSTM with model.cell={model.backbone.spike.cell}, whose real-valued "
                        "cell the NIR graph (Boolean logic) does not express: export it with format=onnx")
    model = model.to(DTYPES[cfg.dtype]).eval()
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(CHECK_STEPS, CHECK_BATCH, model.backbone.input_size, generator=generator) < 0.3).to(DTYPES[cfg.dtype])
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.format == "onnx":
        paths = export_onnx(model, out_dir)
        verdict = check_against_pytorch(model, run_onnx(paths[0], x)["output"], x, "onnxruntime")
    else:
        import nir

        graph = nir_graph(model)
        paths = [out_dir / "model.nir"]
        nir.write(paths[0], graph)
        verdict = check_against_pytorch(model, run_nir(nir.read(paths[0]), x)["output"], x, "nirtorch's NIR executor")
    for path in paths:
        print(path)
    log.info("%s", verdict)
    return paths


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
@reports_user_errors("export")
def hydra_app(cfg: DictConfig) -> None:
    export(cfg, Path(HydraConfig.get().runtime.output_dir))


def main() -> None:
    run_reporting_errors("export", hydra_app)


if __name__ == "__main__":
    main()

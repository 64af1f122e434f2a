"""A recurrent backbone (spiking LSTM or plain nn.LSTM) and a linear readout.

    readout = "last":      y = W_out h_T + b_out            [B, C]     (sequence classification)
    readout = "mean":      y = W_out mean_t h_t + b_out     [B, C]     (classification from the
                                                                         firing rates over time)
    readout = "sequence":  y_t = W_out h_t + b_out          [B, T, C]  (per-step classification
                                                                         or regression)

The model is batch-first at its boundary ([B, T, I] in) and time-major inside.
``build_model(**model_args(...))`` is the single way to make one, so a checkpoint
that stores the arguments can always rebuild its model.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from snn_lstm.errors import UserError
from snn_lstm.spiking.lstm import SpikingLSTM

READOUTS = ("last", "mean", "sequence")
BACKBONES = ("slstm", "lstm")


class SequenceModel(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_size: int, output_size: int, readout: str):
        super().__init__()
        if readout not in READOUTS:
            raise UserError(f"readout must be one of {', '.join(READOUTS)}, got '{readout}'")
        self.backbone = backbone
        self.readout_mode = readout
        self.readout = nn.Linear(hidden_size, output_size)

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x: [B, T, I]. Returns the readout and the backbone's final state."""
        hidden, state = self.backbone(x.transpose(0, 1), state)
        if self.readout_mode == "last":
            return self.readout(hidden[-1]), state
        if self.readout_mode == "mean":
            return self.readout(hidden.mean(0)), state
        return self.readout(hidden).transpose(0, 1), state


def model_args(model_cfg: dict, surrogate_cfg: dict, input_size: int, output_size: int, readout: str) -> dict:
    """The plain-data recipe of a model, as stored in checkpoints."""
    return {
        "model": dict(model_cfg),
        "surrogate": dict(surrogate_cfg),
        "input_size": int(input_size),
        "output_size": int(output_size),
        "readout": readout,
    }


def build_model(
    model: dict[str, Any], surrogate: dict[str, Any], input_size: int, output_size: int, readout: str
) -> SequenceModel:
    name = model["name"]
    hidden_size, num_layers = model["hidden_size"], model["num_layers"]
    if name == "slstm":
        backbone = SpikingLSTM(
            input_size,
            hidden_size,
            num_layers,
            theta1=model["theta1"],
            theta2=model["theta2"],
            surrogate=surrogate["name"],
            alpha1=surrogate["alpha1"],
            alpha2=surrogate["alpha2"],
            cell_grad=model["cell_grad"],
            init=model["init"],
            engine=model["engine"],
            # checkpoints written before the option computed in float32
            matmul_dtype=model.get("matmul_dtype", "float32"),
        )
    elif name == "lstm":
        for key, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if value <= 0:
                raise UserError(f"model.{key} must be a positive integer, got {value}")
        backbone = nn.LSTM(input_size, hidden_size, num_layers)
    else:
        raise UserError(f"unknown model '{name}': choose one of {', '.join(BACKBONES)}")
    return SequenceModel(backbone, hidden_size, output_size, readout)


def model_from_checkpoint(checkpoint: dict[str, Any], source: str = "the checkpoint") -> SequenceModel:
    """The model a checkpoint (load_checkpoint's payload) holds, with its weights."""
    try:
        model = build_model(**checkpoint["model_args"])
    except UserError as error:
        raise UserError(f"{source}: its model_args make no model ({error})") from None
    model.load_state_dict(checkpoint["model"])
    return model

"""A recurrent backbone (spiking LSTM or plain nn.LSTM) and a linear readout.

    readout = "last":      y = W_out h_T + b_out            [B, C]     (sequence classification)
    readout = "mean":      y = W_out mean_t h_t + b_out     [B, C]     (classification from the
                                                                         firing rates over time)
    readout = "sequence":  y_t = W_out h_t + b_out          [B, T, C]  (per-step classification
                                                                         or regression)

The model is batch-first at its boundary ([B, T, I] in) and time-major inside.
``build_model(**model_args(...))`` is the single way to make one, so a checkpoint
that stores the arguments can always rebuild its model; the model group of the config
(conf/model/) holds the backbone's arguments one to one.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from snn_lstm.errors import UserError
from snn_lstm.spiking.lstm import SpikingLSTM, set_forget_bias_

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


def model_args(model_cfg: dict, input_size: int, output_size: int, readout: str) -> dict:
    """The plain-data recipe of a model, as stored in checkpoints."""
    return {"model": dict(model_cfg), "input_size": int(input_size), "output_size": int(output_size), "readout": readout}


def build_model(model: dict[str, Any], input_size: int, output_size: int, readout: str, *,
                surrogate: dict[str, Any] | None = None) -> SequenceModel:
    """`model` maps one to one onto the backbone's arguments (SpikingLSTM or nn.LSTM)
    beside `name` (nn.LSTM's `forget_bias` and `chrono_steps` start its forget gate as
    SpikingLSTM's do). `surrogate`: the separate surrogate group of checkpoints written
    before the model group held the surrogate family and widths."""
    name, arguments = model["name"], {key: value for key, value in model.items() if key != "name"}
    if surrogate is not None:
        arguments.update(surrogate=surrogate["name"], alpha1=surrogate["alpha1"], alpha2=surrogate["alpha2"])
    if name == "slstm":
        backbone = SpikingLSTM(input_size, **arguments)
    elif name == "lstm":
        for key in ("hidden_size", "num_layers"):
            if arguments[key] <= 0:
                raise UserError(f"model.{key} must be a positive integer, got {arguments[key]}")
        forget = {key: arguments.pop(key) for key in ("forget_bias", "chrono_steps") if key in arguments}
        backbone = nn.LSTM(input_size, **arguments)
        for layer in range(backbone.num_layers):  # the same start of the forget gate as the spiking LSTM's
            set_forget_bias_(getattr(backbone, f"bias_ih_l{layer}"), getattr(backbone, f"bias_hh_l{layer}"),
                             backbone.hidden_size, **forget)
    else:
        raise UserError(f"unknown model '{name}': choose one of {', '.join(BACKBONES)}")
    return SequenceModel(backbone, backbone.hidden_size, output_size, readout)


def model_from_checkpoint(checkpoint: dict[str, Any], source: str = "the checkpoint") -> SequenceModel:
    """The model a checkpoint (load_checkpoint's payload) holds, with its weights."""
    try:
        model = build_model(**checkpoint["model_args"])
    except UserError as error:
        raise UserError(f"{source}: its model_args make no model ({error})") from None
    model.load_state_dict(checkpoint["model"])
    return model

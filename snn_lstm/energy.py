"""Sparsity and an energy proxy: how often each part of the spiking LSTM fires, how
many synaptic operations that costs, and what the same work would cost a plain LSTM.

Counted per sample over the recurrent layers (the linear readout is the same in
both models and left out). For layer l with H units, input x_t and output h_t:

    spiking LSTM  every nonzero input spike triggers 4H accumulates (one per gate
                  row of W_ih), every spike of h_{t-1} 4H more (W_hh):
                      AC_l  = 4H * sum_t (nnz(x_t) + nnz(h_{t-1}))
                  a real-valued input (word vectors, intensities with
                  encoder=identity) is multiplied instead: MAC_l = 4H * T * I
    plain LSTM    MAC_l = 4H * T * (I + H)  (dense products, every step)

Energy with the per-operation costs of 32-bit floating point in 45 nm CMOS from
M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC
2014: an addition 0.9 pJ, a multiplication 3.7 pJ, so an accumulate (AC) costs
0.9 pJ and a multiply-accumulate (MAC) 4.6 pJ:

    E_spiking = 0.9 pJ * AC + 4.6 pJ * MAC_real_inputs,    E_lstm = 4.6 pJ * MAC

The proxy counts synaptic operations only (no gate nonlinearities, no memory
traffic), the convention of the SNN literature; it is a ratio to compare models,
not a hardware measurement.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from snn_lstm.spiking.lstm import SpikingLSTM, unpack_spikes

AC_PJ = 0.9  # Horowitz 2014, 45 nm: 32-bit float add
MAC_PJ = 0.9 + 3.7  # 32-bit float multiply + add
ENERGY_SOURCE = "Horowitz, ISSCC 2014 (45 nm, 32-bit float): add 0.9 pJ, multiply 3.7 pJ"
PARTS = ("i", "f", "g", "o", "c", "h")


def lstm_macs(input_size: int, hidden_size: int, num_layers: int, steps: int) -> int:
    """Multiply-accumulates per sample of a plain LSTM of this size."""
    sizes = [input_size] + [hidden_size] * (num_layers - 1)
    return sum(4 * hidden_size * steps * (size + hidden_size) for size in sizes)


@torch.no_grad()
def spiking_activity(model: SpikingLSTM, x: Tensor) -> dict[str, float]:
    """Firing rates of i, f, g, o, c, h per layer and the operations per sample, for
    inputs x [T, B, I] from a zero state, as the model's own engine and precision
    compute them (SpikingLSTM.forward_with_spikes), in evaluation mode."""
    batch = x.shape[1]
    was_training = model.training
    model.eval()
    try:
        _, _, records = model.forward_with_spikes(x.transpose(0, 1) if model.batch_first else x)
    finally:
        model.train(was_training)
    metrics: dict[str, float] = {}
    accumulates, multiplies = 0.0, 0.0
    fan_out = 4 * model.hidden_size  # each input spike reaches one row of every gate
    layer_input = x
    for layer, bits in enumerate(records):
        if bool(((layer_input == 0) | (layer_input == 1)).all()):  # spikes: each one triggers fan_out accumulates
            accumulates += fan_out * (layer_input != 0).sum().item()
        else:  # real values are multiplied
            multiplies += fan_out * layer_input.numel()
        parts = unpack_spikes(bits)
        for name in PARTS:
            metrics[f"activity/l{layer}/{name}"] = parts[name].mean().item()
        layer_input = parts["h"]
        accumulates += fan_out * layer_input[:-1].sum().item()  # h_{t-1} spikes drive W_hh; h_0 = 0
    metrics["ops/ac_per_sample"] = accumulates / batch
    metrics["ops/mac_per_sample"] = multiplies / batch
    return metrics


def energy_metrics(backbone: nn.Module, x: Tensor, presentations: int = 1) -> dict[str, float]:
    """Activity (spiking models), operations per sample and the energy proxy in nJ of
    `backbone` on inputs x [T, B, I], beside a plain LSTM of the same size.

    A classifier that averages K different spike trains per example (task.eval_draws
    = K with a random encoder) runs the backbone K times for one decision: with
    presentations=K the model's operations and energy are per decision, K times those
    of one pass (the firing rates stay those of one pass). The plain LSTM a spiking
    model is set beside reads the values themselves, which needs one pass: that
    reference is not multiplied, so the ratio is per decision against it."""
    steps = x.shape[0]
    hidden, layers = backbone.hidden_size, backbone.num_layers
    spiking = isinstance(backbone, SpikingLSTM)
    dense = (1 if spiking else presentations) * lstm_macs(x.shape[-1], hidden, layers, steps)
    metrics = {"ops/presentations": float(presentations), "ops/lstm_mac_per_sample": float(dense),
               "energy/lstm_nj": dense * MAC_PJ / 1000}
    if spiking:
        metrics.update(spiking_activity(backbone, x))
        for count in ("ops/ac_per_sample", "ops/mac_per_sample"):
            metrics[count] *= presentations
        energy = (metrics["ops/ac_per_sample"] * AC_PJ + metrics["ops/mac_per_sample"] * MAC_PJ) / 1000
        metrics["energy/slstm_nj"] = energy
        metrics["energy/ratio_to_lstm"] = energy / metrics["energy/lstm_nj"]
    return metrics

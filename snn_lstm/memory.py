"""How far back a trained recurrent classifier reaches: measured at the end of every
classification run, on one batch of test sequences, and logged as `memory/...`.

The T steps are cut into four quarters q1 (the first steps) .. q4 (the last).

    memory/grad_q{k}        mean over the steps t of quarter k of ||dL/dx_t||, the
                            gradient of the loss reaching the input of step t (the
                            norm over batch and input units): how much the first
                            steps can still change the answer
    memory/grad_q1_over_q4  their ratio (1: the first steps are heard as well as the last)
    memory/l{l}/forget_q{k} mean forget gate of layer l over quarter k: the share of
                            open gates for the spiking LSTM (f is 0 or 1), the mean of
                            sigma(a_f) for the plain LSTM
    memory/l{l}/held_100    spiking LSTM: of the cells holding a 1 at steps t >= 100,
                            the share that has held it for the last 100 steps or more (the
                            analog cells: a 1 is c_t > theta1, the cell firing)
    memory/l{l}/c_flips_per_100  spiking LSTM: changes of c per cell per 100 steps
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from snn_lstm.spiking.lstm import SpikingLSTM, unpack_spikes

QUARTERS = 4
HOLD_STEPS = 100


def quarter_means(per_step: Tensor) -> list[float]:
    """[T] -> the mean of each quarter of the steps (at least one step each)."""
    steps = len(per_step)
    starts = [min(k * steps // QUARTERS, steps - 1) for k in range(QUARTERS)]
    return [per_step[start:max((k + 1) * steps // QUARTERS, start + 1)].mean().item() for k, start in enumerate(starts)]


def gradient_by_step(model: nn.Module, x: Tensor, target: Tensor, loss: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """||dL/dx_t|| for each step of x [B, T, I] (batch-first, as the model takes it): [T]."""
    inputs = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(model(inputs)[0], target), inputs)
    return grad.pow(2).sum(dim=(0, 2)).sqrt()


@torch.no_grad()
def lstm_forget_gates(lstm: nn.LSTM, x: Tensor) -> list[Tensor]:
    """sigma(a_f) of every layer of a (batch_first=False) nn.LSTM on x [T, B, I]: [T, B, H] each."""
    gates, layer_input = [], x
    hidden = lstm.hidden_size
    for layer in range(lstm.num_layers):
        single = nn.LSTM(layer_input.shape[-1], hidden).to(x.device, x.dtype)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(single, f"{name}_l0").copy_(getattr(lstm, f"{name}_l{layer}"))
        output, _ = single(layer_input)
        previous = torch.cat([output.new_zeros(1, *output.shape[1:]), output[:-1]])
        forget = slice(hidden, 2 * hidden)
        a_f = (layer_input @ single.weight_ih_l0[forget].T + previous @ single.weight_hh_l0[forget].T
               + single.bias_ih_l0[forget] + single.bias_hh_l0[forget])
        gates.append(torch.sigmoid(a_f))
        layer_input = output
    return gates


def held_share(c: Tensor, steps: int = HOLD_STEPS) -> float:
    """c [T, B, H] of 0/1: of the 1s at steps t >= `steps`, the share held without a break since t - steps + 1."""
    run = torch.zeros_like(c[0])
    held, ones = c.new_zeros(()), c.new_zeros(())
    for t, c_t in enumerate(c):
        run = (run + 1) * c_t
        if t >= steps:
            held += (run >= steps).sum()
            ones += c_t.sum()
    return (held / ones).item() if ones > 0 else 0.0


def memory_metrics(model: nn.Module, x: Tensor, target: Tensor, loss: Callable[[Tensor, Tensor], Tensor]) -> dict[str, float]:
    """The `memory/` metrics of a SequenceModel on x [B, T, I] (encoded inputs) and their targets."""
    was_training = model.training
    model.eval()
    try:
        grads = quarter_means(gradient_by_step(model, x, target, loss))
        metrics = {f"memory/grad_q{k + 1}": value for k, value in enumerate(grads)}
        metrics["memory/grad_q1_over_q4"] = grads[0] / grads[-1] if grads[-1] > 0 else 0.0
        backbone, time_major = model.backbone, x.transpose(0, 1)
        if isinstance(backbone, SpikingLSTM):
            _, _, records = backbone.forward_with_spikes(time_major)
            for layer, bits in enumerate(records):
                parts = unpack_spikes(bits)
                metrics.update(_quarters(f"memory/l{layer}/forget", parts["f"]))
                metrics[f"memory/l{layer}/held_{HOLD_STEPS}"] = held_share(parts["c"])
                flips = (parts["c"][1:] != parts["c"][:-1]).float().mean().item()
                metrics[f"memory/l{layer}/c_flips_per_100"] = 100 * flips
        elif isinstance(backbone, nn.LSTM):
            for layer, gates in enumerate(lstm_forget_gates(backbone, time_major)):
                metrics.update(_quarters(f"memory/l{layer}/forget", gates))
    finally:
        model.train(was_training)
    return metrics


def _quarters(name: str, values: Tensor) -> dict[str, float]:
    per_step = values.mean(dim=tuple(range(1, values.dim())))
    return {f"{name}_q{k + 1}": value for k, value in enumerate(quarter_means(per_step))}

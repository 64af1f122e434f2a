"""The spiking LSTM of Lotfi Rezaabad & Vishwanath (ICONS 2020).

Pre-activations in PyTorch's gate order, so weights copy to and from nn.LSTM:

    [a_i, a_f, a_g, a_o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh

Forward, with H the Heaviside step (H(0) = 0):

    i_t = H(a_i - theta1)   f_t = H(a_f - theta1)   o_t = H(a_o - theta1)
    g_t = H(a_g - theta2)
    s_t = f_t * c_{t-1} + i_t * g_t          (0, 1 or 2)
    c_t = min(s_t, 1)
    h_t = o_t * c_t

so every one of i, f, g, o, c, h is exactly 0 or 1. Backward, each dH/du is a
surrogate (gates: width alpha1, candidate: width alpha2). ``cell_grad`` picks
dc_t/ds_t:

    surrogate         g_alpha1(s_t - theta1)     (c_t = H(s_t - theta1), same values; the default)
    straight_through  1                          (the authors' code; fails to learn the sine task)
    clamp             1 if s_t <= 1, 0 if s_t = 2   (the derivative of min(s_t, 1) itself)

times ``cell_grad_scale`` gamma (1 by default; the forward is the same for every gamma).

Through a held bit (f_{t+1} = 1) the error of c_t travels back as
dL/ds_t = dc_t/ds_t (o_t dL/dh_t + dL/ds_{t+1}): surrogate multiplies it at every
step by g_alpha1(s_t - theta1) <= 1/sqrt(pi alpha1) (0.28 for the Gaussian of width
4), so 100 steps back nothing is left of it; clamp passes it whole while the cell is
not overwritten (s_t <= 1), as an LSTM's cell does with f = 1. Between the two,
clamp with gamma < 1 keeps gamma^k of the error k steps back through a held bit.

``recurrent_grad_scale`` beta multiplies the error through the recurrent spikes,
dL/dh_{t-1} += beta da_t W_hh (1 by default: exact BPTT; the forward is the same for every beta).

``cell`` = leaky or graded_forget (beyond the paper) keeps c real in [0, 1]; i, g, o, h stay spikes:

    phi_t = lambda f_t (leaky; lambda = sigmoid(rho) per unit)   or   sigma(a_f) (graded_forget)
    s_t = phi_t c_{t-1} + w i_t g_t,   c_t = min(s_t, 1),   h_t = o_t H(c_t - theta1)

with w = ``write_scale`` in (0, 1] (1: a write sets the cell to 1; below 1 the cell counts
writes, as a leaky integrator of them, up to 1/w of them)

differentiated exactly but for the spikes' surrogates (dc_t/ds_t = 1[s_t <= 1], dh_t/dc_t =
o_t g_alpha1(c_t - theta1)), so a cell's error fades back in time exactly as its value does.

Layout is time-major like nn.LSTM: input [T, B, I], output [T, B, H] and the
final state (h_n, c_n), each [num_layers, B, H].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snn_lstm.errors import UserError
from snn_lstm.spiking.fused import BIT_C, BIT_F, BIT_G, BIT_I, BIT_O, MATMUL_DTYPES, spiking_lstm_layer
from snn_lstm.spiking.surrogate import Surrogate

CELL_GRADS = ("straight_through", "surrogate", "clamp")
# "binary": the paper's cell; the others keep a real-valued c in [0, 1] (module docstring)
CELLS = ("binary", "leaky", "graded_forget")
INITS = ("he", "normal", "pytorch")
# "reference": the step function under autograd, one graph node per op and step;
# the others run one fused autograd function per layer (fused.py).
ENGINES = ("auto", "cpp", "torch", "triton", "reference")


@dataclass(frozen=True)
class SpikeParams:
    """Everything but the weights that a spiking LSTM step needs."""

    theta1: float
    theta2: float
    gate: Surrogate  # i, f, o (and c when cell_grad == "surrogate")
    candidate: Surrogate  # g
    cell_grad: str
    cell_grad_scale: float = 1.0  # gamma: dc/ds times gamma
    recurrent_grad_scale: float = 1.0  # beta: the error through h_{t-1} -> a_t times beta
    cell: str = "binary"
    write_scale: float = 1.0  # w: a write adds w to an analog cell

    def __post_init__(self):
        for name in ("theta1", "theta2"):
            value = getattr(self, name)
            # In [0, 1) the clamp min(s, 1) and H(s - theta1) agree on s in {0, 1, 2}.
            if not (math.isfinite(value) and 0.0 <= value < 1.0):
                raise UserError(f"model.{name} must lie in [0, 1), got {value}")
        if self.cell_grad not in CELL_GRADS:
            raise UserError(
                f"model.cell_grad must be one of {', '.join(CELL_GRADS)}, got '{self.cell_grad}'"
            )
        scale = self.cell_grad_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
            raise UserError(f"model.cell_grad_scale must be a positive number, got {scale!r}")
        if self.cell not in CELLS:
            raise UserError(f"model.cell must be one of {', '.join(CELLS)}, got '{self.cell}'")
        if self.cell != "binary" and self.cell_grad_scale != 1.0:
            raise UserError(f"model.cell_grad_scale applies to the binary cell; model.cell={self.cell} differentiates "
                            "min(s, 1) exactly: set model.cell_grad_scale=1.0")
        w = self.write_scale
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and 0.0 < w <= 1.0):
            raise UserError(f"model.write_scale must lie in (0, 1], got {w!r}")
        if self.cell == "binary" and w != 1.0:
            raise UserError("model.write_scale applies to the analog cells (the paper's binary cell is set to 1 by a "
                            "write): set model.cell=leaky or graded_forget, or model.write_scale=1.0")
        beta = self.recurrent_grad_scale
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and 0.0 <= beta <= 1.0):
            raise UserError(f"model.recurrent_grad_scale must lie in [0, 1], got {beta!r}")


def spiking_lstm_step(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    p: SpikeParams,
    decay: Tensor | None = None,
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """One time step; returns (h_t, c_t, (i_t, f_t, g_t, o_t)). `decay`: the leaky cell's lambda [H].
    For graded_forget the f returned is H(a_f), the record's bit (phi = sigma(a_f) > 1/2)."""
    if p.recurrent_grad_scale != 1.0:
        h = h.detach() + p.recurrent_grad_scale * (h - h.detach())  # the same values, beta dL/dh_{t-1}
    a = F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)
    a_i, a_f, a_g, a_o = a.chunk(4, dim=-1)
    i = p.gate(a_i - p.theta1)
    f = p.gate(a_f - p.theta1)
    g = p.candidate(a_g - p.theta2)
    o = p.gate(a_o - p.theta1)
    if p.cell != "binary":
        if p.cell == "leaky" and decay is None:
            raise ValueError("the leaky cell's step needs its decay lambda [H]: pass decay=torch.sigmoid(decay_logit)")
        phi = decay * f if p.cell == "leaky" else torch.sigmoid(a_f)
        s = phi * c + p.write_scale * (i * g)
        c_new = s - F.relu(s - 1.0)  # min(s, 1), derivative 1 for s <= 1
        f_bit = f if p.cell == "leaky" else (a_f > 0).to(a_f.dtype)
        return o * p.gate(c_new - p.theta1), c_new, (i, f_bit, g, o)
    s = f * c + i * g
    if p.cell_grad == "straight_through":
        # Value min(s, 1), derivative 1: the clamp's correction carries no gradient.
        c_new = s - (s - 1.0).clamp(min=0.0).detach()
    elif p.cell_grad == "clamp":
        c_new = s - F.relu(s - 1.0)  # relu'(0) = 0: derivative 1 at s = 0 and 1, 0 at s = 2
    else:
        c_new = p.gate(s - p.theta1)
    if p.cell_grad_scale != 1.0:
        c_new = c_new.detach() + p.cell_grad_scale * (c_new - c_new.detach())  # the same values, gamma dc/ds
    h_new = o * c_new
    return h_new, c_new, (i, f, g, o)


SPIKE_BITS = {"i": BIT_I, "f": BIT_F, "g": BIT_G, "o": BIT_O, "c": BIT_C}


def pack_spikes(i: Tensor, f: Tensor, g: Tensor, o: Tensor, c: Tensor) -> Tensor:
    """Five 0/1 tensors as one uint8 tensor: i + 2 f + 4 g + 8 o + 16 c."""
    return sum(value.to(torch.uint8) * bit for value, bit in zip((i, f, g, o, c), SPIKE_BITS.values()))


def unpack_spikes(bits: Tensor, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """The record of forward_with_spikes as {"i", "f", "g", "o", "c", "h"} -> 0/1 tensors."""
    parts = {name: (bits & bit).ne(0).to(dtype) for name, bit in SPIKE_BITS.items()}
    parts["h"] = parts["o"] * parts["c"]
    return parts


def init_lstm_parameters_(
    weights: list[Tensor], biases: list[Tensor], input_size: int, hidden_size: int, init: str
) -> None:
    """he: N(0, 2 / (I + H)) and zero biases (the authors' code); normal: N(0, 1)
    and zero biases (the paper's text); pytorch: U(-1/sqrt(H), 1/sqrt(H)) for all."""
    if init not in INITS:
        raise UserError(f"model.init must be one of {', '.join(INITS)}, got '{init}'")
    with torch.no_grad():
        if init == "pytorch":
            bound = 1.0 / math.sqrt(hidden_size)
            for t in weights + biases:
                t.uniform_(-bound, bound)
            return
        std = math.sqrt(2.0 / (input_size + hidden_size)) if init == "he" else 1.0
        for w in weights:
            w.normal_(0.0, std)
        for b in biases:
            b.zero_()


def set_forget_bias_(bias_ih: Tensor, bias_hh: Tensor, hidden_size: int, forget_bias: float = 0.0,
                     chrono_steps: int | None = None) -> None:
    """Start the forget gate open, on top of the weights' init (gate order i, f, g, o):

        constant  b_f = forget_bias                       (forget_bias != 0)
        chrono    b_f ~ log U(1, T - 1),  b_i = -b_f      (chrono_steps = T; Tallec & Ollivier 2018)

    the whole value in b_ih, its slice of b_hh zeroed, so b_ih + b_hh is as written.
    A spiking gate is open while a_f > theta1, so b_f far above theta1 keeps a cell's bit
    for many steps unless the input and h_{t-1} close it; chrono spreads the units over
    time scales up to T and lowers their input gates by as much."""
    if chrono_steps is not None and forget_bias != 0.0:
        raise UserError(f"model.forget_bias ({forget_bias}) and model.chrono_steps ({chrono_steps}) both set the "
                        "forget bias: keep one (forget_bias=0 or chrono_steps=null)")
    if chrono_steps is not None and (isinstance(chrono_steps, bool) or not isinstance(chrono_steps, int) or chrono_steps < 3):
        raise UserError(f"model.chrono_steps must be an integer of at least 3 (the longest time scale, in steps), got {chrono_steps}")
    if not math.isfinite(forget_bias):
        raise UserError(f"model.forget_bias must be a finite number, got {forget_bias}")
    forget, input_gate = slice(hidden_size, 2 * hidden_size), slice(0, hidden_size)
    with torch.no_grad():
        if chrono_steps is not None:
            value = torch.empty(hidden_size, dtype=bias_ih.dtype).uniform_(1.0, chrono_steps - 1.0).log_()
            for gate, sign in ((forget, 1.0), (input_gate, -1.0)):
                bias_ih[gate] = sign * value.to(bias_ih.device)
                bias_hh[gate] = 0.0
        elif forget_bias != 0.0:
            bias_ih[forget] = forget_bias
            bias_hh[forget] = 0.0


def leaky_decay_logits(hidden_size: int, decay_steps: int, **factory) -> Tensor:
    """rho of the leaky cell's lambda = sigmoid(rho), spread over time scales: lambda = exp(-1 / tau)
    with tau ~ log U(1, decay_steps), so a lone write fades below theta1 after about 2.3 tau steps."""
    if isinstance(decay_steps, bool) or not isinstance(decay_steps, int) or decay_steps < 2:
        raise UserError(f"model.decay_steps must be an integer of at least 2 (the longest time scale, in steps), "
                        f"got {decay_steps}")
    tau = torch.empty(hidden_size, **factory).uniform_(0.0, math.log(decay_steps)).exp_()
    decay = torch.exp(-1.0 / tau)
    return torch.log(decay) - torch.log1p(-decay)


def spike_params(theta1: float = 0.1, theta2: float = 0.1, surrogate: str = "gaussian", alpha1: float = 4.0,
                 alpha2: float = 0.3, cell_grad: str = "surrogate", cell_grad_scale: float = 1.0,
                 recurrent_grad_scale: float = 1.0, cell: str = "binary", write_scale: float = 1.0) -> SpikeParams:
    """The spiking options of a cell or layer as one SpikeParams (both gates' surrogates of one family)."""
    return SpikeParams(theta1, theta2, Surrogate(surrogate, alpha1), Surrogate(surrogate, alpha2), cell_grad,
                       cell_grad_scale, recurrent_grad_scale, cell, write_scale)


SPIKING_OPTIONS_DOC = """
    Spiking options (keyword only):
        theta1      threshold of the gates i, f, o (in [0, 1); 0.1)
        theta2      threshold of the candidate g (in [0, 1); 0.1)
        surrogate   family of the surrogate derivative: gaussian (the paper), piecewise_linear,
                    fast_sigmoid, atan, straight_through
        alpha1      width of the gates' surrogate (4.0, the paper's for gaussian)
        alpha2      width of the candidate's surrogate (0.3)
        cell_grad   dc/ds in the backward: surrogate (g'(s - theta1); the default),
                    straight_through (1, the authors' code) or clamp (1 for s <= 1, 0 for s = 2)
        cell_grad_scale  gamma > 0: dc/ds times gamma (1.0; clamp with gamma < 1 lets a held
                    bit's error fade as gamma^k over k steps, instead of passing it whole)
        recurrent_grad_scale  beta in [0, 1]: the error through the recurrent spikes h_{t-1} -> a_t
                    times beta in the backward (1.0: exact BPTT; 0: the error reaches earlier
                    steps through the cell only)
        cell        binary (the paper's), leaky or graded_forget (a real-valued cell; module docstring)
        write_scale w in (0, 1]: what a write adds to an analog cell (1.0: sets it to 1; below 1 the
                    cell integrates writes, up to 1/w of them)
        decay_steps the leaky cell's longest initial time scale: lambda = exp(-1/tau), tau ~ log U(1, T) (784)
        init        he (N(0, 2/(I+H)), zero biases; the authors' code), normal (N(0, 1)), pytorch
        forget_bias   b_f at the start (0.0: the init's; needs bias=True), see set_forget_bias_
        chrono_steps  None, or T: chrono init b_f ~ log U(1, T - 1), b_i = -b_f
    """


class SpikingLSTMCell(nn.Module):
    __doc__ = """One layer, one step, with torch.nn.LSTMCell's signature and parameter names.

    SpikingLSTMCell(input_size, hidden_size, bias=True, device=None, dtype=None, **spiking options)
    forward(input [B, I] or [I], hx=(h, c) or None) -> (h', c'), each [B, H] or [H]; every
    value of h' and c' is 0 or 1. The step runs under autograd (the reference definition);
    for sequences SpikingLSTM's fused engines are much faster.
    """ + SPIKING_OPTIONS_DOC

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 theta1: float = 0.1, theta2: float = 0.1, surrogate: str = "gaussian", alpha1: float = 4.0,
                 alpha2: float = 0.3, cell_grad: str = "surrogate", cell_grad_scale: float = 1.0,
                 recurrent_grad_scale: float = 1.0, cell: str = "binary", write_scale: float = 1.0, decay_steps: int = 784,
                 init: str = "he", forget_bias: float = 0.0, chrono_steps: int | None = None):
        super().__init__()
        _check_sizes(input_size, hidden_size, 1)
        _check_flag("bias", bias)
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size = input_size, hidden_size
        self.spike = spike_params(theta1, theta2, surrogate, alpha1, alpha2, cell_grad, cell_grad_scale,
                                  recurrent_grad_scale, cell, write_scale)
        self.decay_logit = (nn.Parameter(leaky_decay_logits(hidden_size, decay_steps, **factory))
                            if cell == "leaky" else None)
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory)) if bias else None
        biases = [b for b in (self.bias_ih, self.bias_hh) if b is not None]
        init_lstm_parameters_([self.weight_ih, self.weight_hh], biases, input_size, hidden_size, init)
        _start_forget_gate(biases, hidden_size, forget_bias, chrono_steps)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"expected input [B, {self.input_size}] or [{self.input_size}], got {list(input.shape)}")
        unbatched = input.dim() == 1
        if unbatched:
            input = input.unsqueeze(0)
            hx = None if hx is None else tuple(s.unsqueeze(0) for s in hx)
        if hx is None:
            zeros = input.new_zeros(input.shape[0], self.hidden_size)
            hx = (zeros, zeros)
        decay = None if self.decay_logit is None else torch.sigmoid(self.decay_logit)
        h, c, _ = spiking_lstm_step(input, *hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.spike,
                                    decay)
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}, {_spike_repr(self.spike)}"


class SpikingLSTM(nn.Module):
    __doc__ = """Stacked spiking LSTM over a sequence: torch.nn.LSTM's signature, parameter names
    and shapes, with spikes.

    SpikingLSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                bidirectional=False, proj_size=0, device=None, dtype=None, **spiking options)
    forward(input, hx=(h_0, c_0) or None) -> (output, (h_n, c_n)):
        input   [T, B, I] ([B, T, I] with batch_first), or unbatched [T, I]
        output  [T, B, H] ([B, T, H]), or [T, H]: the spikes h_t of the last layer
        h_n, c_n  [num_layers, B, H], or [num_layers, H]; h_0 must be binary, c_0 binary
                  (cell=binary) or in [0, 1] (the analog cells)
    Layer l > 0 takes layer l-1's spikes as input (with `dropout` between layers in
    training, as nn.LSTM). Parameters are named like nn.LSTM's (weight_ih_l0, ...), so
    ``slstm.load_state_dict(lstm.state_dict())`` copies a trained LSTM in.
    bidirectional and proj_size exist for nn.LSTM's signature; only False and 0 are supported.
    """ + SPIKING_OPTIONS_DOC + """    engine        auto (fused: C++ loops on a CPU, Triton kernels on a GPU), cpp, triton, torch
                  (fused, PyTorch ops), reference (step by step under autograd)
        matmul_dtype  float32, tf32, bfloat16 or float16: the fused engines' products (fused.py)
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None, *, theta1: float = 0.1, theta2: float = 0.1, surrogate: str = "gaussian",
                 alpha1: float = 4.0, alpha2: float = 0.3, cell_grad: str = "surrogate", cell_grad_scale: float = 1.0,
                 recurrent_grad_scale: float = 1.0, cell: str = "binary", write_scale: float = 1.0, decay_steps: int = 784,
                 init: str = "he", forget_bias: float = 0.0, chrono_steps: int | None = None, engine: str = "auto",
                 matmul_dtype: str = "float32"):
        super().__init__()
        _check_sizes(input_size, hidden_size, num_layers)
        for name, value in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            _check_flag(name, value)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if bidirectional or proj_size != 0:
            raise ValueError("SpikingLSTM has no bidirectional or projected variant: keep bidirectional=False, proj_size=0")
        if engine not in ENGINES:
            raise UserError(f"model.engine must be one of {', '.join(ENGINES)}, got '{engine}'")
        if matmul_dtype not in MATMUL_DTYPES:
            raise UserError(f"model.matmul_dtype must be one of {', '.join(MATMUL_DTYPES)}, got '{matmul_dtype}'")
        if engine == "reference" and matmul_dtype != "float32":
            raise UserError(f"model.engine=reference has no {matmul_dtype} products: set model.matmul_dtype=float32 "
                            "or a fused engine (model.engine=auto)")
        if cell != "binary" and matmul_dtype != "float32":
            raise UserError(f"model.cell={cell} computes its products in the parameters' dtype: set "
                            "model.matmul_dtype=float32")
        self.engine = engine
        self.matmul_dtype = matmul_dtype
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.dropout = batch_first, float(dropout)
        self.spike = spike_params(theta1, theta2, surrogate, alpha1, alpha2, cell_grad, cell_grad_scale,
                                  recurrent_grad_scale, cell, write_scale)
        self.bias = bias
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else hidden_size
            w_ih = nn.Parameter(torch.empty(4 * hidden_size, layer_in, **factory))
            w_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory))
            setattr(self, f"weight_ih_l{layer}", w_ih)
            setattr(self, f"weight_hh_l{layer}", w_hh)
            biases = []
            if bias:
                biases = [nn.Parameter(torch.empty(4 * hidden_size, **factory)) for _ in range(2)]
                setattr(self, f"bias_ih_l{layer}", biases[0])
                setattr(self, f"bias_hh_l{layer}", biases[1])
            init_lstm_parameters_([w_ih, w_hh], biases, layer_in, hidden_size, init)
            _start_forget_gate(biases, hidden_size, forget_bias, chrono_steps)
            if cell == "leaky":
                setattr(self, f"decay_logit_l{layer}", nn.Parameter(leaky_decay_logits(hidden_size, decay_steps, **factory)))

    def layer_decay_logit(self, layer: int) -> Tensor | None:
        """The leaky cell's rho of a layer (lambda = sigmoid(rho)), None for the other cells."""
        return getattr(self, f"decay_logit_l{layer}", None)

    def layer_parameters(self, layer: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        get = lambda name: getattr(self, f"{name}_l{layer}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        output, state, _ = self._run(input, hx, record=False)
        return output, state

    @torch.no_grad()
    def forward_with_spikes(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor], list[Tensor]]:
        """forward() without a gradient, on this module's own engine and precision, plus
        what every unit of every layer did at every step: one uint8 tensor [T, B, H]
        per layer (time-major, also with batch_first; [T, 1, H] unbatched) whose bits
        are i = 1, f = 2, g = 4, o = 8, c = 16 (h_t = o_t c_t); `unpack_spikes` opens it."""
        return self._run(input, hx, record=True)

    def _run(self, input: Tensor, hx: tuple[Tensor, Tensor] | None, record: bool):
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            layout = "[B, T, I]" if self.batch_first else "[T, B, I]"
            raise ValueError(f"expected input {layout} or [T, I] with I = {self.input_size}, got {list(input.shape)}")
        if input.shape[-3 if input.dim() == 3 and not self.batch_first else -2] == 0:
            raise ValueError(f"the input has no time steps: {list(input.shape)}")
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        given_state = hx is not None
        if hx is None:
            zeros = x.new_zeros(self.num_layers, x.shape[1], self.hidden_size)
            hx = (zeros, zeros)
        elif unbatched:
            hx = tuple(s.unsqueeze(1) for s in hx)
        h0, c0 = hx
        expected = (self.num_layers, x.shape[1], self.hidden_size)
        if tuple(h0.shape) != expected or tuple(c0.shape) != expected:
            raise ValueError(f"expected h_0 and c_0 of shape {list(expected)}, got {list(h0.shape)} and {list(c0.shape)}")
        layer_input = x
        h_n, c_n, records = [], [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
            params = self.layer_parameters(layer)
            decay_logit = self.layer_decay_logit(layer)
            if self.engine == "reference":
                decay = None if decay_logit is None else torch.sigmoid(decay_logit)
                layer_input, c, bits = self._reference_layer(layer_input, h0[layer], c0[layer], params, decay, record)
            else:
                result = spiking_lstm_layer(
                    layer_input, h0[layer], c0[layer], *params, self.spike, self.engine,
                    check_state=given_state, matmul_dtype=self.matmul_dtype, return_bits=record,
                    decay_logit=decay_logit,
                )
                layer_input, c, bits = result if record else (*result, None)
            if record:
                records.append(bits)
            h_n.append(layer_input[-1:])
            c_n.append(c.unsqueeze(0))
        state = (h_n[0], c_n[0]) if self.num_layers == 1 else (torch.cat(h_n), torch.cat(c_n))
        if unbatched:
            return layer_input.squeeze(1), tuple(s.squeeze(1) for s in state), records
        return (layer_input.transpose(0, 1) if self.batch_first else layer_input), state, records

    def _reference_layer(self, x: Tensor, h: Tensor, c: Tensor, params, decay: Tensor | None, record: bool):
        outputs, steps = [], []
        for x_t in x.unbind(0):
            h, c, gates = spiking_lstm_step(x_t, h, c, *params, self.spike, decay)
            outputs.append(h)
            if record:
                steps.append(pack_spikes(*gates, c > self.spike.theta1))
        return torch.stack(outputs), c, torch.stack(steps) if record else None

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, {_spike_repr(self.spike)}, "
                f"engine={self.engine}, matmul_dtype={self.matmul_dtype}")


def _spike_repr(p: SpikeParams) -> str:
    return (f"theta1={p.theta1}, theta2={p.theta2}, surrogate={p.gate.name}, alpha1={p.gate.width}, "
            f"alpha2={p.candidate.width}, cell_grad={p.cell_grad}, cell_grad_scale={p.cell_grad_scale}, "
            f"recurrent_grad_scale={p.recurrent_grad_scale}, cell={p.cell}, write_scale={p.write_scale}")


def _start_forget_gate(biases: list[Tensor], hidden_size: int, forget_bias: float, chrono_steps: int | None) -> None:
    if not biases and (forget_bias != 0.0 or chrono_steps is not None):
        raise UserError("model.forget_bias and model.chrono_steps set a bias: they need bias=True")
    if biases:
        set_forget_bias_(*biases, hidden_size, forget_bias, chrono_steps)


def _check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def _check_sizes(input_size: int, hidden_size: int, num_layers: int) -> None:
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        if value <= 0:
            raise UserError(f"{name} must be a positive integer, got {value}")

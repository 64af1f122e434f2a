"""One autograd function per spiking LSTM layer over the whole sequence.

Forward:
    P = X W_ih^T + (b_ih + b_hh)                 one matrix product for all steps
    a_t = P_t + h_{t-1} W_hh^T                    step by step
    spikes, c_t, h_t from a_t                     (equations in lstm.py)
Saved for backward: the binary state packed one byte per unit (bits i, f, g, o, c),
the input and the initial state, never the float h and c sequences; and either
    G = g'(a - theta) for every gate ([T, B, 4H] floats; engines cpp and torch), or
    nothing more (engine triton): the backward recomputes a = [x_t, h_{t-1}] [W_ih, W_hh]^T + b
    with one product, which on a GPU costs less than holding G.
G (or the recomputed a) is overwritten with da in the backward, so a graph through
this function can be backpropagated once (no retain_graph).

Backward through time by hand, step by step only where it must:
    dh_t = dL/dh_t + da_{t+1} W_hh
    dc_t = o_t dh_t + f_{t+1} ds_{t+1}            ds_t = dc_t, or g'(s_t - theta1) dc_t
    da_t = (ds g, ds c_{t-1}, ds i, dh c_t) * G_t
then the weight gradients as three large products over all steps:
    dW_ih = DA^T X,  dW_hh = DA^T H_prev,  db = sum DA,  dX = DA W_ih.

Engines, the same algorithm with the time loops in: `cpp` (fused_kernels.cpp, CPU,
built on first use and cached by torch), `triton` (triton_kernels.py, CUDA GPUs),
`torch` (PyTorch ops, any device). `auto` takes cpp on a CPU and triton on a GPU.
The states must be binary, as spikes are.

Product precision (`matmul_dtype`; spikes, the rows [x, h, 1] of 0/1 inputs and h
are exact in every one, so only weights and gradients are rounded):
    float32    IEEE float32 products.
    tf32       the recurrent products in the Triton time loops on TF32 tensor cores (10-bit
               mantissa); the batched cuBLAS products follow PyTorch's float32 setting
               (torch.set_float32_matmul_precision("high") makes them TF32 too). On the CPU,
               float32.
    bfloat16   operands rounded to bfloat16 (8 significant bits), float16 (11 bits, range
    float16    +-65504: gradients below 6e-8 flush to zero). On a GPU the products
               accumulate in float32 and return float32. On the CPU, oneDNN accumulates in
               float32 but returns the result rounded to the operand dtype, which is then
               added in float32. Gate arithmetic, surrogates, state and parameters stay in
               the parameters' dtype. CPUs with AVX512-BF16 or AMX run bfloat16 2-3x faster.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from snn_lstm.errors import UserError
from snn_lstm.spiking.surrogate import FAMILY_IDS

if TYPE_CHECKING:
    from snn_lstm.spiking.lstm import SpikeParams

log = logging.getLogger("snnlstm.fused")

BIT_I, BIT_F, BIT_G, BIT_O, BIT_C = 1, 2, 4, 8, 16
ENGINES = ("auto", "cpp", "torch", "triton")
# model.matmul_dtype -> the products' operand dtype; None: the parameters' own
MATMUL_DTYPES = {"float32": None, "tf32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
# parameter dtypes the compiled loops are built for (others run on the torch engine)
COMPILED_DTYPES = (torch.float32, torch.float64)

SIMD_FLAGS = {
    "AVX2": ["-mavx2", "-mfma"],
    "AVX512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mfma", "-mprefer-vector-width=512"],
}

_compiled = None
_compile_failed = False
_compile_lock = threading.Lock()


def compiled_kernels():
    """The C++ time loops, compiled on first use (about a minute) and cached by
    torch.utils.cpp_extension; None if they cannot be built here."""
    global _compiled, _compile_failed
    with _compile_lock:
        if _compiled is None and not _compile_failed:
            # cpp_extension warns about a missing CUDA toolkit, which a CPU build does not need
            extension_log = logging.getLogger("torch.utils.cpp_extension")
            level = extension_log.level
            extension_log.setLevel(logging.ERROR)
            try:
                from torch.utils.cpp_extension import load

                # The step loops only vectorise with AVX2 or AVX-512 (10x, 15x faster
                # than plain x86-64): build for what this CPU has, one cached build each.
                capability = torch.backends.cpu.get_cpu_capability()
                # A forward step splits its batch rows over threads in chunks of at least 32
                # rows (ROWS_PER_THREAD): smaller chunks measured slower than one thread.
                flags = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math"] + SIMD_FLAGS.get(capability, [])
                log.info("loading the fused spiking LSTM kernels for %s (built on first use, about a minute)", capability)
                _compiled = load(
                    name=f"snnlstm_fused_kernels_{capability.lower()}",
                    sources=[str(Path(__file__).with_name("fused_kernels.cpp"))],
                    extra_cflags=flags,
                    verbose=False,
                )
            except Exception as error:  # no compiler, no headers, ...: the PyTorch engine still works
                _compile_failed = True
                log.warning("fused C++ kernels unavailable (%s); using the PyTorch engine", str(error).splitlines()[0])
            finally:
                extension_log.setLevel(level)
        return _compiled


def triton_interpreted() -> bool:
    """TRITON_INTERPRET=1 runs Triton kernels on CPU tensors (correctness checks only)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def triton_kernels():
    """The Triton time loops, or None where Triton is not installed."""
    try:
        from snn_lstm.spiking import triton_kernels as kernels
    except ImportError as error:
        log.warning("Triton unavailable (%s); GPUs use the PyTorch engine", error)
        return None
    return kernels


@functools.cache
def warn_if_bfloat16_is_slow_here() -> None:
    """bfloat16 products beat float32 only on CPUs with bfloat16 arithmetic."""
    has_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if has_bf16 is not None and has_amx is not None and not (has_bf16() or has_amx()):
        log.warning("model.matmul_dtype=bfloat16 on a CPU without AVX512-BF16 or AMX: the products may run "
                    "slower than in float32 (check with snnlstm bench 'matmul_dtypes=[float32,bfloat16]')")


def resolve_engine(engine: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """The engine that runs a layer with parameters of `dtype` on `device`."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    compiled_dtype = dtype in COMPILED_DTYPES
    if engine == "auto":
        if device.type == "cpu" and compiled_dtype and compiled_kernels() is not None:
            return "cpp"
        if device.type == "cuda" and compiled_dtype and triton_kernels() is not None:
            return "triton"
        return "torch"
    # engine and device or dtype that do not go together: the user's choice (UserError is a ValueError)
    if engine in ("cpp", "triton") and not compiled_dtype:
        raise UserError(f"the {engine} engine computes in float32 or float64, not {dtype}: use engine='auto' or "
                        "'torch' for this model, or keep its parameters in float32 and set matmul_dtype")
    if engine == "cpp":
        if device.type != "cpu":
            raise UserError("the cpp engine runs on the CPU only; use engine='auto', 'triton' or 'torch'")
        if compiled_kernels() is None:
            raise RuntimeError("the fused C++ kernels could not be built here; use engine='torch'")
    if engine == "triton":
        if not (device.type == "cuda" or (device.type == "cpu" and triton_interpreted())):
            raise UserError("the triton engine runs on CUDA GPUs (on the CPU only under TRITON_INTERPRET=1, for "
                            "checks); use engine='auto'")
        if triton_kernels() is None:
            raise RuntimeError("Triton is not installed here; use engine='torch'")
    return engine


# ---------------------------------------------------------------- products
def _product(a: Tensor, b: Tensor) -> Tensor:
    """a @ b (2-D) in b's dtype, returned in a's: b is the weight, already cast to the
    product dtype. On a GPU the accumulation and the result are float32."""
    if a.dtype == b.dtype:
        return a @ b
    if a.is_cuda:
        return torch.mm(a.to(b.dtype), b, out_dtype=torch.float32).to(a.dtype)
    return (a.to(b.dtype) @ b).to(a.dtype)


def unit_rows(w_hh: Tensor) -> Tensor:
    """W_hh^T [H, 4H], contiguous: row k holds what a spike of unit k adds to the
    pre-activations. Made once per version of the weights (kept on the tensor), not at
    every forward: at batch 1 the copy would cost more than the whole sequence."""
    cached = getattr(w_hh, "_snnlstm_unit_rows", None)
    if cached is None or cached[0] != w_hh._version:
        cached = (w_hh._version, w_hh.detach().t().contiguous())
        w_hh._snnlstm_unit_rows = cached
    return cached[1]


def summed_bias(b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor | None:
    """b_ih + b_hh, made once per version of the two (kept on b_ih)."""
    if b_ih is None or b_hh is None:
        return b_ih
    versions = (b_ih._version, b_hh._version)
    cached = getattr(b_ih, "_snnlstm_summed_bias", None)
    if cached is None or cached[0] != versions or cached[1] is not b_hh:
        cached = (versions, b_hh, (b_ih + b_hh).detach())
        b_ih._snnlstm_summed_bias = cached
    return cached[2]


def _add_product(out: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """out += a @ b in place, the product in b's dtype."""
    return out.addmm_(a, b) if a.dtype == b.dtype else out.add_(_product(a, b))


# ---------------------------------------------------------------- PyTorch engine
def _forward_loop_torch(pre: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, theta1: float, theta2: float):
    steps, batch, four_h = pre.shape
    hidden = four_h // 4
    h_seq = pre.new_empty(steps, batch, hidden)
    bits = torch.empty(steps, batch, hidden, dtype=torch.uint8, device=pre.device)
    h, c = h0, c0
    weights = pre.new_tensor([BIT_I, BIT_F, BIT_G, BIT_O]).view(4, 1)
    thresholds = pre.new_tensor([theta1, theta1, theta2, theta1]).view(4, 1)
    for t in range(steps):
        a = _add_product(pre[t], h, w_hh.t()).view(batch, 4, hidden)
        spikes = (a > thresholds).to(pre.dtype)
        i, f, g, o = spikes.unbind(1)
        c = ((f * c + i * g) > 0).to(pre.dtype)
        torch.mul(o, c, out=h_seq[t])
        h = h_seq[t]
        bits[t] = (spikes * weights).sum(1).add_(c * BIT_C).to(torch.uint8)
    return h_seq, bits, c


def _bit(bits: Tensor, flag: int, dtype: torch.dtype) -> Tensor:
    return (bits & flag).ne(0).to(dtype)


def _hidden_from_bits(bits: Tensor, dtype: torch.dtype) -> Tensor:
    """h = o * c, read back from the packed bits."""
    return ((bits & (BIT_O | BIT_C)) == (BIT_O | BIT_C)).to(dtype)


def _fill_previous_hidden(xh: Tensor, bits: Tensor, h0: Tensor, input_size: int) -> None:
    """The h columns of the rows [x_t, h_{t-1}, 1]."""
    hidden = bits.shape[-1]
    xh[0, :, input_size : input_size + hidden] = h0
    xh[1:, :, input_size : input_size + hidden] = _hidden_from_bits(bits[:-1], xh.dtype)


def cell_derivatives(spike: "SpikeParams") -> list[float]:
    """dc_t/ds_t at s_t = 0, 1, 2 (the only values s takes), times cell_grad_scale:
    the table every engine's backward reads."""
    if spike.cell_grad == "clamp":
        table = [1.0, 1.0, 0.0]
    elif spike.cell_grad == "straight_through":
        table = [1.0, 1.0, 1.0]
    else:
        table = spike.gate.derivative(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64) - spike.theta1).tolist()
    return [spike.cell_grad_scale * value for value in table]


def reads_cell_table(spike: "SpikeParams") -> bool:
    """False where dc/ds is 1 at every s (straight_through, unscaled): the loops then skip the table."""
    return cell_derivatives(spike) != [1.0, 1.0, 1.0]


def _backward_loop_torch(sur, bits, grad_h, grad_c_last, h0, c0, w_hh, xh, input_size: int, cell_surrogate: bool,
                         cell_sur: list[float]):
    """Same contract as the C++ backward_loop: `sur` is overwritten with da and the
    h columns of `xh` are filled with h_{t-1}."""
    steps, batch, four_h = sur.shape
    hidden = four_h // 4
    dtype = sur.dtype
    ds = sur.new_zeros(batch, hidden)
    dh_rec = sur.new_zeros(batch, hidden)
    cell_table = sur.new_tensor(cell_sur)
    for t in reversed(range(steps)):
        i, f, g, o, cell = (_bit(bits[t], flag, dtype) for flag in (BIT_I, BIT_F, BIT_G, BIT_O, BIT_C))
        c_prev = _bit(bits[t - 1], BIT_C, dtype) if t > 0 else c0
        dh = grad_h[t] + dh_rec
        dc = o * dh
        dc = dc + (grad_c_last if t == steps - 1 else _bit(bits[t + 1], BIT_F, dtype) * ds)
        if cell_surrogate:
            dc = dc * cell_table[(f * c_prev + i * g).round().long()]
        ds = dc
        d = sur[t].view(batch, 4, hidden)
        d[:, 0].mul_(dc * g)
        d[:, 1].mul_(dc * c_prev)
        d[:, 2].mul_(dc * i)
        d[:, 3].mul_(dh * cell)
        dh_rec = _product(sur[t], w_hh)
    _fill_previous_hidden(xh, bits, h0, input_size)
    f0 = _bit(bits[0], BIT_F, dtype)
    return dh_rec, f0 * ds


# ---------------------------------------------------------------- analog cells (PyTorch engine)
def _forward_loop_torch_analog(pre: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, decay: Tensor | None,
                               spike: "SpikeParams", surrogates: bool):
    """The analog cell's forward loop (lstm.py): the C++ forward_loop_analog's contract."""
    steps, batch, four_h = pre.shape
    hidden = four_h // 4
    h_seq = pre.new_empty(steps, batch, hidden)
    bits = torch.empty(steps, batch, hidden, dtype=torch.uint8, device=pre.device)
    c_seq = pre.new_empty(steps if surrogates else 0, batch, hidden)
    phi_seq, og_seq = torch.empty_like(c_seq), torch.empty_like(c_seq)
    thresholds = pre.new_tensor([spike.theta1, spike.theta1, spike.theta2, spike.theta1]).view(4, 1)
    h, c = h0, c0
    for t in range(steps):
        a = _add_product(pre[t], h, w_hh.t()).view(batch, 4, hidden)
        u = a - thresholds
        i, f, g, o = (u > 0).to(pre.dtype).unbind(1)
        if spike.cell == "graded_forget":
            phi = torch.sigmoid(a[:, 1])
            f = (phi > 0.5).to(pre.dtype)
        else:
            phi = decay * f
        c = torch.clamp(phi * c + spike.write_scale * (i * g), max=1.0)
        fires = (c > spike.theta1).to(pre.dtype)
        torch.mul(o, fires, out=h_seq[t])
        h = h_seq[t]
        bits[t] = (i * BIT_I + f * BIT_F + g * BIT_G + o * BIT_O + fires * BIT_C).to(torch.uint8)
        if surrogates:
            c_seq[t], phi_seq[t] = c, phi
            og_seq[t] = o * spike.gate.derivative(c - spike.theta1)
            sur = a  # a view of pre[t]: overwritten with (G_i, dphi/da_f, G_g, G_o)
            dphi = phi * (1 - phi) if spike.cell == "graded_forget" else decay * spike.gate.derivative(u[:, 1])
            sur[:, 0] = spike.gate.derivative(u[:, 0])
            sur[:, 1] = dphi
            sur[:, 2] = spike.candidate.derivative(u[:, 2])
            sur[:, 3] = spike.gate.derivative(u[:, 3])
    return h_seq, bits, c, c_seq, phi_seq, og_seq


def _backward_loop_torch_analog(sur, bits, c_seq, phi_seq, og_seq, grad_h, grad_c_last, h0, c0, w_hh, xh,
                                input_size: int, write_scale: float):
    """The C++ backward_loop_analog's contract: `sur` becomes da, the h columns of `xh` are filled,
    returns (dL/dh_0, dL/dc_0, ds [T, B, H])."""
    steps, batch, four_h = sur.shape
    hidden = four_h // 4
    dtype = sur.dtype
    ds = sur.new_zeros(batch, hidden)
    ds_seq = sur.new_empty(steps, batch, hidden)
    dh_rec = sur.new_zeros(batch, hidden)
    for t in reversed(range(steps)):
        i, g, fires = (_bit(bits[t], flag, dtype) for flag in (BIT_I, BIT_G, BIT_C))
        c_prev = c_seq[t - 1] if t > 0 else c0
        dh = grad_h[t] + dh_rec
        dc = og_seq[t] * dh + (grad_c_last if t == steps - 1 else phi_seq[t + 1] * ds)
        ds = dc * (phi_seq[t] * c_prev + write_scale * (i * g) <= 1.0).to(dtype)
        ds_seq[t] = ds
        d = sur[t].view(batch, 4, hidden)
        d[:, 0].mul_(write_scale * ds * g)
        d[:, 1].mul_(ds * c_prev)
        d[:, 2].mul_(write_scale * ds * i)
        d[:, 3].mul_(dh * fires)
        dh_rec = _product(sur[t], w_hh)
    _fill_previous_hidden(xh, bits, h0, input_size)
    return dh_rec, phi_seq[0] * ds, ds_seq


# ---------------------------------------------------------------- autograd
def gate_surrogates(a: Tensor, spike: "SpikeParams") -> Tensor:
    """G = g'(a - theta) per gate: width alpha1 for i, f, o; alpha2 for g."""
    steps, batch, four_h = a.shape
    a4 = a.view(steps, batch, 4, four_h // 4)
    sur = torch.empty_like(a4)
    sur[:, :, 0:2] = spike.gate.derivative(a4[:, :, 0:2] - spike.theta1)
    sur[:, :, 2] = spike.candidate.derivative(a4[:, :, 2] - spike.theta2)
    sur[:, :, 3] = spike.gate.derivative(a4[:, :, 3] - spike.theta1)
    return sur.view(steps, batch, four_h)


def _weights_for_products(w_ih: Tensor, w_hh: Tensor, matmul_dtype: str) -> tuple[Tensor, Tensor]:
    """The weights once in the product dtype (no copy without one)."""
    dtype = MATMUL_DTYPES[matmul_dtype]
    return (w_ih, w_hh) if dtype is None else (w_ih.to(dtype), w_hh.to(dtype))


def _layer_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, spike: "SpikeParams", engine: str, matmul_dtype: str,
                   needs_grad: bool):
    """(h_seq, c_last, saved): `saved` is what the backward needs; without `needs_grad`, the bits alone."""
    steps, batch, _ = x.shape
    w_ih_mm, w_hh_mm = _weights_for_products(w_ih, w_hh, matmul_dtype)
    bias = summed_bias(b_ih, b_hh)
    if bias is not None and w_ih_mm.dtype == x.dtype:
        pre = torch.addmm(bias, x.reshape(steps * batch, -1), w_ih_mm.t())
    else:
        pre = _product(x.reshape(steps * batch, -1), w_ih_mm.t())
        if bias is not None:
            pre.add_(bias)
    pre = pre.view(steps, batch, -1)
    if engine == "triton":
        h_seq, bits, c_last = triton_kernels().forward_loop(pre, unit_rows(w_hh_mm), h0, c0, spike.theta1,
                                                              spike.theta2, matmul_dtype)
        saved = (None, bits, x, h0, c0, w_ih_mm, w_hh_mm, bias)
    elif engine == "cpp":
        # the loop overwrites `pre` with the gate surrogates when asked, for one family
        in_loop = needs_grad and spike.gate.name == spike.candidate.name
        h_seq, bits, c_last = compiled_kernels().forward_loop(
            pre, unit_rows(w_hh_mm), h0, c0, spike.theta1, spike.theta2,
            FAMILY_IDS[spike.gate.name], spike.gate.width, spike.candidate.width, in_loop,
        )
        sur = pre if in_loop or not needs_grad else gate_surrogates(pre, spike)
        saved = (sur, bits, x, h0, c0, w_ih_mm, w_hh_mm, None)
    else:
        h_seq, bits, c_last = _forward_loop_torch(pre, w_hh_mm, h0, c0, spike.theta1, spike.theta2)
        saved = (gate_surrogates(pre, spike) if needs_grad else None, bits, x, h0, c0, w_ih_mm, w_hh_mm, None)
    return h_seq, c_last, saved if needs_grad else bits


def _rows_for_weight_grads(x: Tensor, hidden: int) -> Tensor:
    """[T, B, I + H + 1] rows [x_t, h_{t-1}, 1], the h columns left for the backward loop to
    fill: one product with da gives dW_ih, dW_hh and db at once."""
    steps, batch, inputs = x.shape
    xh = x.new_empty(steps, batch, inputs + hidden + 1)
    xh[:, :, :inputs] = x
    xh[:, :, -1] = 1.0
    return xh


def _parameter_grads(ctx, da: Tensor, xh: Tensor, x: Tensor, w_ih: Tensor, w_hh: Tensor, dh0: Tensor, dc0: Tensor):
    """(dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh) from da [T * B, 4H] and the filled rows."""
    inputs = x.shape[-1]
    grads = _product(da.t(), xh.view(-1, xh.shape[-1]).to(w_hh.dtype))
    grad_w_ih, grad_w_hh, grad_b = grads[:, :inputs], grads[:, inputs:-1], grads[:, -1]
    grad_x = _product(da, w_ih).view_as(x) if ctx.needs_input_grad[0] else None
    has_b_ih, has_b_hh = ctx.has_bias
    return (grad_x, dh0 if ctx.needs_input_grad[1] else None, dc0 if ctx.needs_input_grad[2] else None, grad_w_ih,
            grad_w_hh, grad_b if has_b_ih else None, grad_b if has_b_hh else None)


def _backward_once(ctx) -> None:
    if ctx.consumed:
        raise RuntimeError("the fused spiking LSTM reuses its saved tensors in the backward, so it cannot "
                           "backpropagate twice (retain_graph=True); use engine='reference' for that")
    ctx.consumed = True


def _recurrent_weights_for_backward(w_hh: Tensor, spike: "SpikeParams") -> Tensor:
    """W_hh times beta: the loops send the error through h_{t-1} -> a_t with W_hh alone."""
    return w_hh if spike.recurrent_grad_scale == 1.0 else w_hh * spike.recurrent_grad_scale


class FusedSpikingLSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, spike: "SpikeParams", engine: str, matmul_dtype: str):
        h_seq, c_last, saved = _layer_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, spike, engine, matmul_dtype, True)
        ctx.save_for_backward(*saved)
        ctx.spike, ctx.engine, ctx.matmul_dtype = spike, engine, matmul_dtype
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        ctx.consumed = False
        return h_seq, c_last

    @staticmethod
    def backward(ctx, grad_h_seq, grad_c_last):
        _backward_once(ctx)
        sur, bits, x, h0, c0, w_ih, w_hh, bias = ctx.saved_tensors
        spike = ctx.spike
        steps, batch, hidden = bits.shape
        if grad_h_seq is None:
            grad_h_seq = x.new_zeros(steps, batch, hidden)
        if grad_c_last is None:
            grad_c_last = x.new_zeros(batch, hidden)
        cell_sur = cell_derivatives(spike)
        w_hh_back = _recurrent_weights_for_backward(w_hh, spike)
        inputs = x.shape[-1]
        xh = _rows_for_weight_grads(x, hidden)
        if ctx.engine == "triton":
            _fill_previous_hidden(xh, bits, h0, inputs)
            # the pre-activations again, in the forward's precision
            da = _product(xh.view(steps * batch, -1)[:, :-1], torch.cat([w_ih, w_hh], dim=1).t())
            if bias is not None:
                da.add_(bias)
            ds0 = triton_kernels().backward_loop(da.view(steps, batch, -1), bits, grad_h_seq, grad_c_last, c0,
                                                 w_hh_back, spike, cell_sur, ctx.matmul_dtype)
            dh0 = _product(da[:batch], w_hh_back)
            dc0 = _bit(bits[0], BIT_F, ds0.dtype) * ds0
        else:
            loop = compiled_kernels().backward_loop if ctx.engine == "cpp" else _backward_loop_torch
            dh0, dc0 = loop(sur, bits, grad_h_seq, grad_c_last, h0, c0, w_hh_back, xh, inputs, reads_cell_table(spike),
                            cell_sur)
            da = sur.view(steps * batch, -1)  # the loop has turned G into da
        return (*_parameter_grads(ctx, da, xh, x, w_ih, w_hh, dh0, dc0), None, None, None)


def _analog_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, decay, spike: "SpikeParams", engine: str, needs_grad: bool):
    """The analog cell's forward on `engine` (cpp, triton or torch): (h_seq, c_T, bits, c_seq, phi_seq, og_seq, pre)."""
    steps, batch, _ = x.shape
    bias = summed_bias(b_ih, b_hh)
    flat = x.reshape(steps * batch, -1)
    pre = (torch.addmm(bias, flat, w_ih.t()) if bias is not None else flat @ w_ih.t()).view(steps, batch, -1)
    lam = decay if decay is not None else pre.new_zeros(0)
    if engine == "cpp":
        h_seq, bits, c_last, c_seq, phi_seq, og_seq = compiled_kernels().forward_loop_analog(
            pre, unit_rows(w_hh), h0, c0, lam.detach().contiguous(), spike.theta1, spike.theta2,
            FAMILY_IDS[spike.gate.name], spike.gate.width, spike.candidate.width, spike.write_scale,
            spike.cell == "graded_forget", needs_grad,
        )
    elif engine == "triton":
        h_seq, bits, c_last, c_seq, phi_seq, og_seq = triton_kernels().forward_loop_analog(
            pre, unit_rows(w_hh), h0, c0, None if decay is None else decay.detach(), spike, needs_grad)
    else:
        h_seq, bits, c_last, c_seq, phi_seq, og_seq = _forward_loop_torch_analog(
            pre, w_hh, h0, c0, None if decay is None else decay.detach(), spike, needs_grad)
    return h_seq, c_last, bits, c_seq, phi_seq, og_seq, pre


class FusedAnalogCellLayer(torch.autograd.Function):
    """A layer of an analog-cell variant (lstm.py, CELLS) over the whole sequence; `rho` is the
    leaky cell's decay logit (lambda = sigmoid(rho)), None for graded_forget."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, rho, spike: "SpikeParams", engine: str):
        decay = torch.sigmoid(rho) if rho is not None else None
        h_seq, c_last, bits, c_seq, phi_seq, og_seq, sur = _analog_forward(
            x, h0, c0, w_ih, w_hh, b_ih, b_hh, decay, spike, engine, needs_grad=True)
        ctx.save_for_backward(sur, bits, c_seq, phi_seq, og_seq, x, h0, c0, w_ih, w_hh, decay)
        ctx.spike, ctx.engine = spike, engine
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        ctx.consumed = False
        return h_seq, c_last

    @staticmethod
    def backward(ctx, grad_h_seq, grad_c_last):
        _backward_once(ctx)
        sur, bits, c_seq, phi_seq, og_seq, x, h0, c0, w_ih, w_hh, decay = ctx.saved_tensors
        steps, batch, hidden = bits.shape
        grad_h_seq = x.new_zeros(steps, batch, hidden) if grad_h_seq is None else grad_h_seq.contiguous()
        grad_c_last = x.new_zeros(batch, hidden) if grad_c_last is None else grad_c_last.contiguous()
        xh = _rows_for_weight_grads(x, hidden)
        w_hh_back = _recurrent_weights_for_backward(w_hh, ctx.spike)
        if ctx.engine == "triton":
            ds_seq = triton_kernels().backward_loop_analog(sur, bits, c_seq, phi_seq, og_seq, grad_h_seq, grad_c_last,
                                                           c0, w_hh_back, ctx.spike.write_scale)
            _fill_previous_hidden(xh, bits, h0, x.shape[-1])
            dh0, dc0 = _product(sur[0], w_hh_back), phi_seq[0] * ds_seq[0]
        else:
            loop = compiled_kernels().backward_loop_analog if ctx.engine == "cpp" else _backward_loop_torch_analog
            dh0, dc0, ds_seq = loop(sur, bits, c_seq, phi_seq, og_seq, grad_h_seq, grad_c_last, h0, c0, w_hh_back, xh,
                                    x.shape[-1], ctx.spike.write_scale)
        grad_rho = None
        if decay is not None and ctx.needs_input_grad[7]:
            # dL/dlambda = sum over steps and rows of ds_t f_t c_{t-1}; lambda = sigmoid(rho)
            c_prev = torch.cat([c0.unsqueeze(0), c_seq[:-1]])
            grad_decay = (ds_seq * _bit(bits, BIT_F, x.dtype) * c_prev).sum(dim=(0, 1))
            grad_rho = grad_decay * decay * (1 - decay)
        da = sur.view(steps * batch, -1)  # the loop has turned the surrogates into da
        return (*_parameter_grads(ctx, da, xh, x, w_ih, w_hh, dh0, dc0), grad_rho, None, None)


def spiking_lstm_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    spike: "SpikeParams",
    engine: str = "auto",
    check_state: bool = True,
    matmul_dtype: str = "float32",
    return_bits: bool = False,
    decay_logit: Tensor | None = None,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """x [T, B, I], h0 and c0 [B, H] binary -> (h [T, B, H], c_T [B, H]).
    `check_state`: verify that h0 and c0 hold only 0 and 1 (skip for known zeros).
    `matmul_dtype`: the precision of the matrix products (module docstring). Without a
    gradient to compute (grad mode off, or no input requires one) nothing is saved
    and no surrogate computed. `return_bits` (without a gradient only) adds the
    loop's own record of the spikes: uint8 [T, B, H], bits BIT_I | BIT_F | BIT_G |
    BIT_O | BIT_C per unit (for the analog cells, BIT_C is H(c_t - theta1)). `decay_logit`: the leaky
    cell's rho [H] (lambda = sigmoid(rho)); the analog cells take c0 in [0, 1]."""
    analog = spike.cell != "binary"
    if check_state:
        if not bool(((h0 == 0) | (h0 == 1)).all()):
            raise ValueError("h0 must be binary (0 or 1) for the fused spiking LSTM; use engine='reference'")
        if not bool(((c0 >= 0) & (c0 <= 1)).all() if analog else ((c0 == 0) | (c0 == 1)).all()):
            raise ValueError(f"c0 must be {'in [0, 1]' if analog else 'binary (0 or 1)'} for the fused spiking LSTM; "
                             "use engine='reference'")
    if analog:
        engine = _analog_engine(engine, x.device, w_ih.dtype, spike, matmul_dtype)
    else:
        engine = resolve_engine(engine, x.device, w_ih.dtype)
    if matmul_dtype == "bfloat16" and x.device.type == "cpu":
        warn_if_bfloat16_is_slow_here()
    x, h0, c0 = (t.to(w_ih.dtype).contiguous() for t in (x, h0, c0))
    # the products' precision is matmul_dtype's, whatever an enclosing autocast region asks
    autocast = torch.is_autocast_enabled(x.device.type)
    with torch.autocast(x.device.type, enabled=False) if autocast else contextlib.nullcontext():
        parameters = (w_ih, w_hh, b_ih, b_hh)
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, h0, c0, *parameters, decay_logit))
        if needs_grad and return_bits:
            raise ValueError("return_bits needs the forward without a gradient: run it under torch.no_grad()")
        if needs_grad and analog:
            return FusedAnalogCellLayer.apply(x, h0, c0, *parameters, decay_logit, spike, engine)
        if needs_grad:
            return FusedSpikingLSTMLayer.apply(x, h0, c0, *parameters, spike, engine, matmul_dtype)
        if analog:
            decay = None if decay_logit is None else torch.sigmoid(decay_logit)
            h_seq, c_last, bits, *_ = _analog_forward(x, h0, c0, *parameters, decay, spike, engine, needs_grad=False)
        else:
            h_seq, c_last, bits = _layer_forward(x, h0, c0, *parameters, spike, engine, matmul_dtype, needs_grad=False)
        return (h_seq, c_last, bits) if return_bits else (h_seq, c_last)


def _analog_engine(engine: str, device: torch.device, dtype: torch.dtype, spike: "SpikeParams", matmul_dtype: str) -> str:
    """The engine of an analog cell, as resolve_engine's; their products are in the parameters' dtype."""
    if matmul_dtype != "float32":
        raise UserError(f"model.cell={spike.cell} computes its products in the parameters' dtype: set "
                        "model.matmul_dtype=float32")
    return resolve_engine(engine, device, dtype)

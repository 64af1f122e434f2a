"""The time loops of the fused spiking LSTM layer as Triton kernels (CUDA GPUs).

The autograd function in fused.py does the large products with cuBLAS; these
kernels run what must go step by step. Batch rows are independent, so each program
owns BLOCK_B rows and runs all T steps for them: no program ever waits for another,
and a step costs one pass over W_hh (from L2) per program, not a kernel launch.

Forward, for each step t and each block of BLOCK_N hidden units:

    a[:, n] = P_t[:, n] + sum_k tl.dot(h_{t-1}[:, k], W_hh^T[k, n])     per gate, k in blocks of BLOCK_K
    i, f, o = a > theta1,  g = a_g > theta2,  c_t = f c_{t-1} | i g,  h_t = o c_t

h_{t-1} is read back from the output written at step t - 1 (h[0] = h0), c from a
two-slot buffer. No surrogate is computed or stored: the backward recomputes the
pre-activations with one product (fused.py), which is what keeps the memory held
between forward and backward to one byte per unit and step.

Backward, in reverse time, per block of units (equations in fused.py):

    dh_t = dL/dh_t + sum_k tl.dot(da_{t+1}[:, k], W_hh[k, n])            k over the 4H gate rows
    dc_t = o_t dh_t + f_{t+1} ds_{t+1}  (+ dL/dc_T at t = T-1),  ds_t = dc_t or g'(s_t - theta1) dc_t
    da_t = (G_i ds g, G_f ds c_{t-1}, G_g ds i, G_o dh c_t),  G = g'(a_t - theta)

with da_t written over the recomputed a_t. A step's writes are read by other
threads of the same program in the next step: `tl.debug_barrier()` (a CTA barrier)
separates the steps, and within a step the loads of a block from the stores over it.

The analog cells (lstm.py, c real in [0, 1]) have their own pair, forward_steps_analog and
backward_steps_analog, with the C++ analog loops' contract: the forward keeps c_t, phi_t,
o_t g'(c_t - theta1) and the gates' surrogates for the backward (real values, not one byte per
unit and step: the cell's value and its fade cannot be recomputed from the spikes).

Products: tl.dot on the weights' dtype (float32 with input_precision "ieee" or
"tf32", bfloat16 or float16), accumulated in float32 (float64 for float64 models);
the spike operands h are 0/1 and exact in every one, the gradients da are rounded
to the operand dtype. Block shapes are powers of two >= 16 (tl.dot's minimum), with
masks for ragged edges.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from snn_lstm.spiking.surrogate import FAMILY_IDS

BLOCK_B = 16  # batch rows per program: tl.dot's smallest M
BIT_I, BIT_F, BIT_G, BIT_O, BIT_C = 1, 2, 4, 8, 16  # as in fused.py
NUM_WARPS = 8  # with 32-unit blocks, at most 20 bytes of register spills a thread in any variant (ptxas -v, sm_90)


@triton.jit
def _surrogate(u, width, scale, FAMILY: tl.constexpr):
    """g_width(u) of surrogate.py; `scale` is the family's width constant (see surrogate_constants)."""
    if FAMILY == 0:  # gaussian: exp(-u^2 / a) / sqrt(pi a)
        return tl.exp(-u * u / width) * scale
    elif FAMILY == 1:  # piecewise_linear: max(0, 1 - |u| / a) / a
        return tl.maximum(1.0 - tl.abs(u) / width, 0.0) / width
    elif FAMILY == 2:  # fast_sigmoid: 1 / (1 + a |u|)^2
        d = 1.0 + width * tl.abs(u)
        return 1.0 / (d * d)
    elif FAMILY == 3:  # atan: (a / 2) / (1 + (pi / 2 a u)^2)
        z = scale * u
        return (width * 0.5) / (1.0 + z * z)
    else:  # straight_through: 1[|u| < a] / (2 a)
        return tl.where(tl.abs(u) < width, scale, 0.0)


@triton.jit
def _preactivations(gate, h_prev, w_ptr, rows, cols, row_ok, col_ok, hidden, BLOCK_K: tl.constexpr,
                    INPUT_PRECISION: tl.constexpr):
    """a_t = P_t + h_{t-1} W_hh^T for a block of rows and units, per gate: `gate` points at the
    block's P_t[:, i] (the f, g, o columns follow at hidden, 2 hidden, 3 hidden)."""
    four_h = 4 * hidden
    mask = row_ok[:, None] & col_ok[None, :]
    a_i = tl.load(gate, mask=mask, other=0.0)
    a_f = tl.load(gate + hidden, mask=mask, other=0.0)
    a_g = tl.load(gate + 2 * hidden, mask=mask, other=0.0)
    a_o = tl.load(gate + 3 * hidden, mask=mask, other=0.0)
    for k0 in range(0, hidden, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < hidden
        h_k = tl.load(h_prev + rows[:, None] * hidden + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        h_k = h_k.to(w_ptr.dtype.element_ty)
        w = w_ptr + ks[:, None] * four_h + cols[None, :]
        w_mask = k_ok[:, None] & col_ok[None, :]
        a_i += tl.dot(h_k, tl.load(w, mask=w_mask, other=0.0), input_precision=INPUT_PRECISION)
        a_f += tl.dot(h_k, tl.load(w + hidden, mask=w_mask, other=0.0), input_precision=INPUT_PRECISION)
        a_g += tl.dot(h_k, tl.load(w + 2 * hidden, mask=w_mask, other=0.0), input_precision=INPUT_PRECISION)
        a_o += tl.dot(h_k, tl.load(w + 3 * hidden, mask=w_mask, other=0.0), input_precision=INPUT_PRECISION)
    return a_i, a_f, a_g, a_o


@triton.jit
def forward_steps(pre_ptr, w_ptr, h_ptr, c_ptr, bits_ptr, theta_ptr, steps, batch, hidden,
                  BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  INPUT_PRECISION: tl.constexpr):
    """pre [T, B, 4H] (input products + biases); w = W_hh^T [H, 4H] in the product dtype;
    h [T+1, B, H] with h[0] = h0, steps 1..T written here; c [2, B, H] with c[0] = c0;
    bits [T, B, H] uint8 (i, f, g, o, c); theta = (theta1, theta2)."""
    four_h = 4 * hidden
    plane = batch * hidden
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < batch
    theta1 = tl.load(theta_ptr)
    theta2 = tl.load(theta_ptr + 1)
    # step pointers advance by whole steps (64-bit pointer arithmetic, however long the sequence)
    pre_t = pre_ptr
    h_prev = h_ptr
    bits_t = bits_ptr
    for t in range(steps):
        c_prev = c_ptr + (t % 2) * plane
        c_next = c_ptr + ((t + 1) % 2) * plane
        for n0 in range(0, hidden, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_ok = cols < hidden
            mask = row_ok[:, None] & col_ok[None, :]
            unit = rows[:, None] * hidden + cols[None, :]
            gate = pre_t + rows[:, None] * four_h + cols[None, :]
            a_i, a_f, a_g, a_o = _preactivations(gate, h_prev, w_ptr, rows, cols, row_ok, col_ok, hidden, BLOCK_K,
                                                 INPUT_PRECISION)
            i = a_i > theta1
            f = a_f > theta1
            g = a_g > theta2
            o = a_o > theta1
            cell = (f & (tl.load(c_prev + unit, mask=mask, other=0.0) > 0)) | (i & g)
            tl.store(c_next + unit, cell.to(a_i.dtype), mask=mask)
            tl.store(h_prev + plane + unit, (o & cell).to(a_i.dtype), mask=mask)
            bits = (i.to(tl.uint8) | (f.to(tl.uint8) << 1) | (g.to(tl.uint8) << 2) | (o.to(tl.uint8) << 3)
                    | (cell.to(tl.uint8) << 4))
            tl.store(bits_t + unit, bits, mask=mask)
        pre_t += batch * four_h
        h_prev += plane
        bits_t += plane
        tl.debug_barrier()


@triton.jit
def backward_steps(a_ptr, bits_ptr, grad_h_ptr, grad_c_ptr, c0_ptr, w_ptr, ds_ptr, params_ptr, steps, batch, hidden,
                   GATE: tl.constexpr, CANDIDATE: tl.constexpr, CELL_SURROGATE: tl.constexpr,
                   BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   INPUT_PRECISION: tl.constexpr):
    """a [T, B, 4H]: the pre-activations, overwritten with da; bits [T, B, H]; grad_h
    [T, B, H] dL/dh_t; grad_c [B, H] dL/dc_T; c0 [B, H]; w = W_hh [4H, H] in the product
    dtype; ds [2, B, H] scratch, ds[0] = dL/ds_0 at the end; params = (theta1, theta2,
    alpha1, alpha2, gate constant, candidate constant, g'(s - theta1) for s = 0, 1, 2)."""
    four_h = 4 * hidden
    plane = batch * hidden
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < batch
    theta1 = tl.load(params_ptr)
    theta2 = tl.load(params_ptr + 1)
    alpha1 = tl.load(params_ptr + 2)
    alpha2 = tl.load(params_ptr + 3)
    scale1 = tl.load(params_ptr + 4)
    scale2 = tl.load(params_ptr + 5)
    cs0 = tl.load(params_ptr + 6)
    cs1 = tl.load(params_ptr + 7)
    cs2 = tl.load(params_ptr + 8)
    # step pointers start at the last step and go back by whole steps
    last = (steps - 1).to(tl.int64)
    a_t = a_ptr + last * batch * four_h
    bits_t = bits_ptr + last * plane
    grad_t = grad_h_ptr + last * plane
    for s in range(steps):
        t = steps - 1 - s
        has_next = t < steps - 1
        has_prev = t > 0
        ds_here = ds_ptr + (t % 2) * plane
        ds_next = ds_ptr + ((t + 1) % 2) * plane
        for n0 in range(0, hidden, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_ok = cols < hidden
            mask = row_ok[:, None] & col_ok[None, :]
            unit = rows[:, None] * hidden + cols[None, :]
            dh = tl.load(grad_t + unit, mask=mask, other=0.0)
            if has_next:  # dh += da_{t+1} W_hh
                for k0 in range(0, four_h, BLOCK_K):
                    ks = k0 + tl.arange(0, BLOCK_K)
                    k_ok = ks < four_h
                    d = tl.load(a_t + batch * four_h + rows[:, None] * four_h + ks[None, :],
                                mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                    w = tl.load(w_ptr + ks[:, None] * hidden + cols[None, :], mask=k_ok[:, None] & col_ok[None, :],
                                other=0.0)
                    dh += tl.dot(d.to(w_ptr.dtype.element_ty), w, input_precision=INPUT_PRECISION)
            here = tl.load(bits_t + unit, mask=mask, other=0)
            i = ((here & 1) != 0).to(dh.dtype)
            f = ((here & 2) != 0).to(dh.dtype)
            g = ((here & 4) != 0).to(dh.dtype)
            o = ((here & 8) != 0).to(dh.dtype)
            cell = ((here & 16) != 0).to(dh.dtype)
            before = tl.load(bits_t - plane + unit, mask=mask & has_prev, other=0)
            c_first = tl.load(c0_ptr + unit, mask=mask & (t == 0), other=0.0)
            c_prev = tl.where(has_prev, ((before & 16) != 0).to(dh.dtype), c_first.to(dh.dtype))
            after = tl.load(bits_t + plane + unit, mask=mask & has_next, other=0)
            f_next = ((after & 2) != 0).to(dh.dtype)
            dc = o * dh + f_next * tl.load(ds_next + unit, mask=mask & has_next, other=0.0)
            dc += tl.load(grad_c_ptr + unit, mask=mask & (t == steps - 1), other=0.0)
            if CELL_SURROGATE:
                total = f * c_prev + i * g  # s_t: 0, 1 or 2
                dc *= tl.where(total < 0.5, cs0, tl.where(total < 1.5, cs1, cs2))
            tl.store(ds_here + unit, dc, mask=mask)
            gate = a_t + rows[:, None] * four_h + cols[None, :]
            u_i = tl.load(gate, mask=mask, other=0.0) - theta1
            u_f = tl.load(gate + hidden, mask=mask, other=0.0) - theta1
            u_g = tl.load(gate + 2 * hidden, mask=mask, other=0.0) - theta2
            u_o = tl.load(gate + 3 * hidden, mask=mask, other=0.0) - theta1
            d_i = _surrogate(u_i, alpha1, scale1, GATE) * (dc * g)
            d_f = _surrogate(u_f, alpha1, scale1, GATE) * (dc * c_prev)
            d_g = _surrogate(u_g, alpha2, scale2, CANDIDATE) * (dc * i)
            d_o = _surrogate(u_o, alpha1, scale1, GATE) * (dh * cell)
            tl.debug_barrier()  # every thread has read this block of a before any writes da over it
            tl.store(gate, d_i, mask=mask)
            tl.store(gate + hidden, d_f, mask=mask)
            tl.store(gate + 2 * hidden, d_g, mask=mask)
            tl.store(gate + 3 * hidden, d_o, mask=mask)
        a_t -= batch * four_h
        bits_t -= plane
        grad_t -= plane
        tl.debug_barrier()


@triton.jit
def forward_steps_analog(pre_ptr, w_ptr, h_ptr, c_ptr, bits_ptr, phi_ptr, og_ptr, lambda_ptr, params_ptr, steps, batch,
                         hidden, GATE: tl.constexpr, CANDIDATE: tl.constexpr, GRADED_FORGET: tl.constexpr,
                         SURROGATES: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_K: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """The analog cells (lstm.py), as forward_steps with

        phi_t = lambda f_t (leaky) or sigma(a_f) (graded_forget),  s_t = phi_t c_{t-1} + w i_t g_t,
        c_t = min(s_t, 1),  h_t = o_t H(c_t - theta1).

    c [T+1, B, H] with c[0] = c0 when SURROGATES (c_1..c_T kept for the backward), else [2, B, H]
    used in turn; lambda [H] (leaky only). With SURROGATES the step also writes phi_t and
    og_t = o_t g'(c_t - theta1) ([T, B, H] each) and overwrites pre_t with (G_i, dphi_t/da_f, G_g,
    G_o): the C++ forward_loop_analog's contract. params = (theta1, theta2, alpha1, alpha2, gate
    constant, candidate constant, w)."""
    four_h = 4 * hidden
    plane = batch * hidden
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < batch
    theta1 = tl.load(params_ptr)
    theta2 = tl.load(params_ptr + 1)
    alpha1 = tl.load(params_ptr + 2)
    alpha2 = tl.load(params_ptr + 3)
    scale1 = tl.load(params_ptr + 4)
    scale2 = tl.load(params_ptr + 5)
    write = tl.load(params_ptr + 6)
    pre_t = pre_ptr
    h_prev = h_ptr
    bits_t = bits_ptr
    phi_t = phi_ptr
    og_t = og_ptr
    for t in range(steps):
        if SURROGATES:
            c_prev = c_ptr + t * plane
            c_next = c_prev + plane
        else:
            c_prev = c_ptr + (t % 2) * plane
            c_next = c_ptr + ((t + 1) % 2) * plane
        for n0 in range(0, hidden, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_ok = cols < hidden
            mask = row_ok[:, None] & col_ok[None, :]
            unit = rows[:, None] * hidden + cols[None, :]
            gate = pre_t + rows[:, None] * four_h + cols[None, :]
            a_i, a_f, a_g, a_o = _preactivations(gate, h_prev, w_ptr, rows, cols, row_ok, col_ok, hidden, BLOCK_K,
                                                 INPUT_PRECISION)
            i = a_i > theta1
            g = a_g > theta2
            o = a_o > theta1
            if GRADED_FORGET:
                phi = 1.0 / (1.0 + tl.exp(-a_f))
                f = phi > 0.5  # the record's f bit: the gate keeps more than it drops
            else:
                f = a_f > theta1
                decay = tl.load(lambda_ptr + cols, mask=col_ok, other=0.0).to(a_f.dtype)
                phi = decay[None, :] * f.to(a_f.dtype)
            total = phi * tl.load(c_prev + unit, mask=mask, other=0.0) + write * (i & g).to(a_f.dtype)
            cell = tl.minimum(total, 1.0)
            fires = cell > theta1
            tl.store(c_next + unit, cell, mask=mask)
            tl.store(h_prev + plane + unit, (o & fires).to(a_i.dtype), mask=mask)
            bits = (i.to(tl.uint8) | (f.to(tl.uint8) << 1) | (g.to(tl.uint8) << 2) | (o.to(tl.uint8) << 3)
                    | (fires.to(tl.uint8) << 4))
            tl.store(bits_t + unit, bits, mask=mask)
            if SURROGATES:
                if GRADED_FORGET:
                    dphi = phi * (1.0 - phi)
                else:
                    dphi = decay[None, :] * _surrogate(a_f - theta1, alpha1, scale1, GATE)
                tl.store(phi_t + unit, phi, mask=mask)
                tl.store(og_t + unit, o.to(a_i.dtype) * _surrogate(cell - theta1, alpha1, scale1, GATE), mask=mask)
                s_i = _surrogate(a_i - theta1, alpha1, scale1, GATE)
                s_g = _surrogate(a_g - theta2, alpha2, scale2, CANDIDATE)
                s_o = _surrogate(a_o - theta1, alpha1, scale1, GATE)
                tl.debug_barrier()  # every thread has read this block of pre before any writes over it
                tl.store(gate, s_i, mask=mask)
                tl.store(gate + hidden, dphi, mask=mask)
                tl.store(gate + 2 * hidden, s_g, mask=mask)
                tl.store(gate + 3 * hidden, s_o, mask=mask)
        pre_t += batch * four_h
        h_prev += plane
        bits_t += plane
        if SURROGATES:
            phi_t += plane
            og_t += plane
        tl.debug_barrier()


@triton.jit
def backward_steps_analog(sur_ptr, bits_ptr, c_ptr, c0_ptr, phi_ptr, og_ptr, grad_h_ptr, grad_c_ptr, w_ptr, ds_ptr,
                          params_ptr,
                          steps, batch, hidden, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          INPUT_PRECISION: tl.constexpr):
    """The analog cells' reverse-time loop, the C++ backward_loop_analog's:

        dh_t = dL/dh_t + da_{t+1} W_hh,   dc_t = og_t dh_t + phi_{t+1} ds_{t+1}  (+ dL/dc_T at t = T-1)
        ds_t = 1[s_t <= 1] dc_t,   da_t = (w ds g, ds c_{t-1}, w ds i, dh H(c_t - theta1)) * (G_i, dphi/da_f, G_g, G_o)

    sur [T, B, 4H] (the forward's surrogates), overwritten with da; c [T, B, H] (c_1..c_T), c0 [B, H];
    phi, og, grad_h [T, B, H]; grad_c [B, H] dL/dc_T; w = W_hh [4H, H]; ds [T, B, H] gets ds_t;
    params = (w,)."""
    four_h = 4 * hidden
    plane = batch * hidden
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < batch
    write = tl.load(params_ptr)
    last = (steps - 1).to(tl.int64)
    sur_t = sur_ptr + last * batch * four_h
    bits_t = bits_ptr + last * plane
    c_before = c_ptr + (last - 1) * plane  # c_{t-1}; read for t > 0 only
    phi_t = phi_ptr + last * plane
    og_t = og_ptr + last * plane
    grad_t = grad_h_ptr + last * plane
    ds_t = ds_ptr + last * plane
    for s in range(steps):
        t = steps - 1 - s
        has_next = t < steps - 1
        for n0 in range(0, hidden, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_ok = cols < hidden
            mask = row_ok[:, None] & col_ok[None, :]
            unit = rows[:, None] * hidden + cols[None, :]
            dh = tl.load(grad_t + unit, mask=mask, other=0.0)
            if has_next:  # dh += da_{t+1} W_hh
                for k0 in range(0, four_h, BLOCK_K):
                    ks = k0 + tl.arange(0, BLOCK_K)
                    k_ok = ks < four_h
                    d = tl.load(sur_t + batch * four_h + rows[:, None] * four_h + ks[None, :],
                                mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                    w = tl.load(w_ptr + ks[:, None] * hidden + cols[None, :], mask=k_ok[:, None] & col_ok[None, :],
                                other=0.0)
                    dh += tl.dot(d.to(w_ptr.dtype.element_ty), w, input_precision=INPUT_PRECISION)
            here = tl.load(bits_t + unit, mask=mask, other=0)
            i = ((here & 1) != 0).to(dh.dtype)
            g = ((here & 4) != 0).to(dh.dtype)
            fires = ((here & 16) != 0).to(dh.dtype)
            c_prev = tl.load(c_before + unit, mask=mask & (t > 0), other=0.0)
            c_prev += tl.load(c0_ptr + unit, mask=mask & (t == 0), other=0.0)
            phi = tl.load(phi_t + unit, mask=mask, other=0.0)
            dc = tl.load(og_t + unit, mask=mask, other=0.0) * dh
            dc += tl.load(phi_t + plane + unit, mask=mask & has_next, other=0.0) * tl.load(
                ds_t + plane + unit, mask=mask & has_next, other=0.0)
            dc += tl.load(grad_c_ptr + unit, mask=mask & (t == steps - 1), other=0.0)
            ds = tl.where(phi * c_prev + write * (i * g) <= 1.0, dc, 0.0)
            tl.store(ds_t + unit, ds, mask=mask)
            gate = sur_t + rows[:, None] * four_h + cols[None, :]
            d_i = tl.load(gate, mask=mask, other=0.0) * (write * ds * g)
            d_f = tl.load(gate + hidden, mask=mask, other=0.0) * (ds * c_prev)
            d_g = tl.load(gate + 2 * hidden, mask=mask, other=0.0) * (write * ds * i)
            d_o = tl.load(gate + 3 * hidden, mask=mask, other=0.0) * (dh * fires)
            tl.debug_barrier()  # every thread has read this block of sur before any writes da over it
            tl.store(gate, d_i, mask=mask)
            tl.store(gate + hidden, d_f, mask=mask)
            tl.store(gate + 2 * hidden, d_g, mask=mask)
            tl.store(gate + 3 * hidden, d_o, mask=mask)
        sur_t -= batch * four_h
        bits_t -= plane
        c_before -= plane
        phi_t -= plane
        og_t -= plane
        grad_t -= plane
        ds_t -= plane
        tl.debug_barrier()


@functools.lru_cache(maxsize=64)
def constants(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A kernel's scalar parameters as a tensor, made once per model, device and dtype
    (in the compute dtype, so float64 checks get float64 thresholds; and no copy to the
    GPU at every launch)."""
    return torch.tensor(values, device=device, dtype=dtype)


def surrogate_constant(name: str, width: float) -> float:
    """The width constant _surrogate takes for a family (unused by the others)."""
    if name == "gaussian":
        return 1.0 / math.sqrt(math.pi * width)
    if name == "atan":
        return math.pi / 2.0 * width
    if name == "straight_through":
        return 0.5 / width
    return 0.0


def block(size: int) -> int:
    """A power of two in [16, 32] covering `size` where it can: with 64-unit blocks the
    float32 forward spills 10 KB of registers a thread (4 warps; 72 bytes with 8; ptxas -v, sm_90)."""
    return min(32, max(16, triton.next_power_of_2(size)))


def input_precision(matmul_dtype: str, operand: torch.dtype) -> str:
    """tl.dot's mode: TF32 tensor cores exist for float32 operands only."""
    return "tf32" if matmul_dtype == "tf32" and operand == torch.float32 else "ieee"


def forward_loop(pre: torch.Tensor, w_rows: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, theta1: float,
                 theta2: float, matmul_dtype: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pre [T, B, 4H], w_rows = W_hh^T [H, 4H] contiguous in the product dtype -> (h [T, B, H], bits, c_T)."""
    steps, batch, four_h = pre.shape
    hidden = four_h // 4
    h = pre.new_empty(steps + 1, batch, hidden)
    h[0] = h0
    c = pre.new_empty(2, batch, hidden)
    c[0] = c0
    bits = torch.empty(steps, batch, hidden, dtype=torch.uint8, device=pre.device)
    theta = constants((theta1, theta2), pre.device, pre.dtype)
    forward_steps[(triton.cdiv(batch, BLOCK_B),)](
        pre, w_rows, h, c, bits, theta, steps, batch, hidden,
        BLOCK_B=BLOCK_B, BLOCK_N=block(hidden), BLOCK_K=block(hidden),
        INPUT_PRECISION=input_precision(matmul_dtype, w_rows.dtype), num_warps=NUM_WARPS,
    )
    return h[1:], bits, c[steps % 2]


def backward_loop(a: torch.Tensor, bits: torch.Tensor, grad_h: torch.Tensor, grad_c_last: torch.Tensor,
                  c0: torch.Tensor, w_hh: torch.Tensor, spike, cell_sur: list[float],
                  matmul_dtype: str) -> torch.Tensor:
    """Turns the pre-activations `a` [T, B, 4H] into da in place; returns dL/ds_0 [B, H]."""
    steps, batch, four_h = a.shape
    hidden = four_h // 4
    ds = a.new_empty(2, batch, hidden)
    gate, candidate = spike.gate, spike.candidate
    params = constants((spike.theta1, spike.theta2, gate.width, candidate.width, surrogate_constant(gate.name, gate.width),
                        surrogate_constant(candidate.name, candidate.width), *cell_sur), a.device, a.dtype)
    backward_steps[(triton.cdiv(batch, BLOCK_B),)](
        a, bits, grad_h.contiguous(), grad_c_last.contiguous(), c0.contiguous(), w_hh.contiguous(), ds, params,
        steps, batch, hidden,
        GATE=FAMILY_IDS[gate.name], CANDIDATE=FAMILY_IDS[candidate.name],
        CELL_SURROGATE=cell_sur != [1.0, 1.0, 1.0],  # else dc/ds = 1 everywhere: no table to read
        BLOCK_B=BLOCK_B, BLOCK_N=block(hidden), BLOCK_K=block(four_h),
        INPUT_PRECISION=input_precision(matmul_dtype, w_hh.dtype), num_warps=NUM_WARPS,
    )
    return ds[0]


def forward_loop_analog(pre: torch.Tensor, w_rows: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
                        decay: torch.Tensor | None, spike, surrogates: bool):
    """The C++ forward_loop_analog's contract, float32 products: pre [T, B, 4H] (overwritten with the
    surrogates when `surrogates`), w_rows = W_hh^T [H, 4H] -> (h [T, B, H], bits, c_T, c [T, B, H],
    phi [T, B, H], og [T, B, H]), the last three empty without `surrogates`."""
    steps, batch, four_h = pre.shape
    hidden = four_h // 4
    h = pre.new_empty(steps + 1, batch, hidden)
    h[0] = h0
    c = pre.new_empty(steps + 1 if surrogates else 2, batch, hidden)
    c[0] = c0
    phi, og = (pre.new_empty(steps if surrogates else 0, batch, hidden) for _ in range(2))
    bits = torch.empty(steps, batch, hidden, dtype=torch.uint8, device=pre.device)
    gate, candidate = spike.gate, spike.candidate
    params = constants((spike.theta1, spike.theta2, gate.width, candidate.width, surrogate_constant(gate.name, gate.width),
                        surrogate_constant(candidate.name, candidate.width), spike.write_scale), pre.device, pre.dtype)
    graded = spike.cell == "graded_forget"
    forward_steps_analog[(triton.cdiv(batch, BLOCK_B),)](
        pre, w_rows, h, c, bits, phi, og, pre if graded else decay.contiguous(), params, steps, batch, hidden,
        GATE=FAMILY_IDS[gate.name], CANDIDATE=FAMILY_IDS[candidate.name], GRADED_FORGET=graded,
        SURROGATES=surrogates, BLOCK_B=BLOCK_B, BLOCK_N=block(hidden), BLOCK_K=block(hidden),
        INPUT_PRECISION="ieee", num_warps=NUM_WARPS,
    )
    c_last = c[steps] if surrogates else c[steps % 2]
    return h[1:], bits, c_last, c[1:] if surrogates else c[:0], phi, og


def backward_loop_analog(sur: torch.Tensor, bits: torch.Tensor, c_seq: torch.Tensor, phi: torch.Tensor,
                         og: torch.Tensor, grad_h: torch.Tensor, grad_c_last: torch.Tensor, c0: torch.Tensor,
                         w_hh: torch.Tensor, write_scale: float) -> torch.Tensor:
    """Turns the surrogates `sur` [T, B, 4H] into da in place; returns ds [T, B, H]."""
    steps, batch, four_h = sur.shape
    hidden = four_h // 4
    ds = sur.new_empty(steps, batch, hidden)
    backward_steps_analog[(triton.cdiv(batch, BLOCK_B),)](
        sur, bits, c_seq, c0.contiguous(), phi, og, grad_h.contiguous(), grad_c_last.contiguous(), w_hh.contiguous(), ds,
        constants((write_scale,), sur.device, sur.dtype), steps, batch, hidden,
        BLOCK_B=BLOCK_B, BLOCK_N=block(hidden), BLOCK_K=block(four_h), INPUT_PRECISION="ieee", num_warps=NUM_WARPS,
    )
    return ds


# ---------------------------------------------------------------- ahead-of-time builds
# (parameter dtype, product operand dtype, input precision): every combination the engine launches
PRECISION_VARIANTS = [("fp32", "fp32", "ieee"), ("fp32", "fp32", "tf32"), ("fp32", "bf16", "ieee"),
                      ("fp32", "fp16", "ieee"), ("fp64", "fp64", "ieee"), ("fp64", "bf16", "ieee")]


def compile_for_gpu(capability: int) -> list[str]:
    """Build the kernels for an NVIDIA GPU of compute capability `capability` (80, 90, ...)
    with no GPU present, as `triton.compile` does before a launch: every precision
    variant, both block sizes, with and without the 16-byte alignment a launch may
    specialise on, every surrogate family in the backward. The interpreter accepts code
    that the GPU compiler refuses; this is where that shows. Returns one line per build."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", capability, 32)
    built = []

    def build(kernel, pointers: dict[str, str], constexprs: dict, aligned: bool) -> None:
        signature = {**pointers, "steps": "i32", "batch": "i32", "hidden": "i32", **{k: "constexpr" for k in constexprs}}
        names = list(signature)
        # a launch with aligned tensors and sizes that are multiples of 16 specialises on that
        attrs = {(names.index(k),): [["tt.divisibility", 16]] for k in (*pointers, "batch", "hidden")} if aligned else {}
        compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs),
                                  target=target, options={"num_warps": NUM_WARPS})
        assert compiled.asm.get("cubin"), f"no cubin for {kernel.__name__}"
        built.append(f"sm_{capability} {kernel.__name__} {pointers} {constexprs} aligned={aligned}")

    families = list(FAMILY_IDS.values())
    for number, (param, operand, precision) in enumerate(PRECISION_VARIANTS):
        for size, aligned in ((16, False), (32, True)):
            blocks = {"BLOCK_B": BLOCK_B, "BLOCK_N": size, "BLOCK_K": size, "INPUT_PRECISION": precision}
            build(forward_steps, {"pre_ptr": f"*{param}", "w_ptr": f"*{operand}", "h_ptr": f"*{param}",
                                  "c_ptr": f"*{param}", "bits_ptr": "*u8", "theta_ptr": f"*{param}"}, blocks, aligned)
            # the families in turn, gate and candidate of different families, both cell modes
            gate, candidate = families[number % len(families)], families[(number + size) % len(families)]
            build(backward_steps, {"a_ptr": f"*{param}", "bits_ptr": "*u8", "grad_h_ptr": f"*{param}",
                                   "grad_c_ptr": f"*{param}", "c0_ptr": f"*{param}", "w_ptr": f"*{operand}",
                                   "ds_ptr": f"*{param}", "params_ptr": f"*{param}"},
                  {"GATE": gate, "CANDIDATE": candidate, "CELL_SURROGATE": aligned, **blocks}, aligned)
    for family in families:  # each family as gate and as candidate, float32
        blocks = {"BLOCK_B": BLOCK_B, "BLOCK_N": 32, "BLOCK_K": 32, "INPUT_PRECISION": "ieee"}
        build(backward_steps, {"a_ptr": "*fp32", "bits_ptr": "*u8", "grad_h_ptr": "*fp32", "grad_c_ptr": "*fp32",
                               "c0_ptr": "*fp32", "w_ptr": "*fp32", "ds_ptr": "*fp32", "params_ptr": "*fp32"},
              {"GATE": family, "CANDIDATE": family, "CELL_SURROGATE": family % 2 == 0, **blocks}, True)
    # the analog cells, products in the parameters' dtype: each cell with surrogates, one without
    for param, size, aligned, variants in (("fp32", 32, True, ((True, True), (False, False))),
                                           ("fp64", 16, False, ((False, True),))):
        blocks = {"BLOCK_B": BLOCK_B, "BLOCK_N": size, "BLOCK_K": size, "INPUT_PRECISION": "ieee"}
        for graded, surrogates in variants:
            gate = families[(graded + 2 * surrogates + size) % len(families)]
            build(forward_steps_analog, {name: f"*{param}" for name in ("pre_ptr", "w_ptr", "h_ptr", "c_ptr")}
                  | {"bits_ptr": "*u8"} | {name: f"*{param}" for name in ("phi_ptr", "og_ptr", "lambda_ptr", "params_ptr")},
                  {"GATE": gate, "CANDIDATE": families[-1 - gate], "GRADED_FORGET": graded, "SURROGATES": surrogates,
                   **blocks}, aligned)
        build(backward_steps_analog, {"sur_ptr": f"*{param}", "bits_ptr": "*u8"} | {name: f"*{param}" for name in (
            "c_ptr", "c0_ptr", "phi_ptr", "og_ptr", "grad_h_ptr", "grad_c_ptr", "w_ptr", "ds_ptr", "params_ptr")},
              blocks, aligned)
    return built

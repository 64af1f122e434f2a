"""The spiking LSTM against its equations (docs/model.md): values by hand, gradients by the
backward-through-time formulas written out, binary states, clamping, parameters."""

import math

import pytest
import torch
from torch import nn

from snn_lstm.errors import UserError
from snn_lstm.spiking import SpikingLSTM, SpikingLSTMCell
from snn_lstm.spiking.fused import triton_interpreted
from snn_lstm.spiking.lstm import SpikeParams, spiking_lstm_step, unpack_spikes
from snn_lstm.spiking.surrogate import Surrogate


def gaussian(u, alpha):
    return torch.exp(-u * u / alpha) / math.sqrt(math.pi * alpha)


def params(cell_grad="straight_through", theta1=0.1, theta2=0.1, alpha1=4.0, alpha2=0.3):
    return SpikeParams(theta1, theta2, Surrogate("gaussian", alpha1), Surrogate("gaussian", alpha2), cell_grad)


def test_two_steps_by_hand():
    """I = H = 1. Step 1 opens i, g, o with f shut: c = h = 1. Step 2 opens i, f, g
    (s = 2, clamped to c = 1) and shuts o (h = 0)."""
    w_ih = torch.tensor([[0.5], [0.05], [0.5], [0.5]])  # rows: i, f, g, o
    w_hh = torch.tensor([[0.0], [0.5], [0.0], [-0.45]])
    zero_bias = torch.zeros(4)
    x = torch.ones(1, 1)
    h, c = torch.zeros(1, 1), torch.zeros(1, 1)

    h, c, (i, f, g, o) = spiking_lstm_step(x, h, c, w_ih, w_hh, zero_bias, zero_bias, params())
    # a = (0.5, 0.05, 0.5, 0.5) against theta = 0.1
    assert [i.item(), f.item(), g.item(), o.item(), c.item(), h.item()] == [1, 0, 1, 1, 1, 1]

    h, c, (i, f, g, o) = spiking_lstm_step(x, h, c, w_ih, w_hh, zero_bias, zero_bias, params())
    # a = (0.5, 0.55, 0.5, 0.05): s = f c + i g = 2 -> c = 1; o shut -> h = 0
    assert [i.item(), f.item(), g.item(), o.item(), c.item(), h.item()] == [1, 1, 1, 0, 1, 0]


def test_threshold_tie_does_not_spike():
    w_ih = torch.tensor([[0.1], [0.1], [0.1], [0.1]])  # a - theta == 0 exactly for every gate
    zero = torch.zeros(4)
    h, c, gates = spiking_lstm_step(
        torch.ones(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), w_ih, torch.zeros(4, 1), zero, zero, params()
    )
    assert all(gate.item() == 0 for gate in gates) and h.item() == 0 and c.item() == 0


@pytest.mark.parametrize("cell_grad", ["straight_through", "surrogate", "clamp"])
def test_every_state_is_binary_and_c_is_clamped(cell_grad):
    torch.manual_seed(0)
    layer = SpikingLSTM(8, 32, 2, cell_grad=cell_grad, init="normal")
    with torch.no_grad():
        layer.bias_hh_l0.fill_(1.0)  # keep f, i, g open often, so s = 2 happens
    x = (torch.rand(50, 16, 8) < 0.5).float()
    p = layer.spike
    h, c = torch.zeros(16, 32), torch.zeros(16, 32)
    clamped = 0
    for x_t in x:
        f_c_prev = c
        h, c, (i, f, g, o) = spiking_lstm_step(x_t, h, c, *layer.layer_parameters(0), p)
        for tensor in (i, f, g, o, c, h):
            assert set(tensor.unique().tolist()) <= {0.0, 1.0}
        s = f * f_c_prev + i * g
        clamped += int((s == 2).sum())
        assert torch.equal(c, s.clamp(max=1))
    assert clamped > 0
    output, (h_n, c_n) = layer(x)
    assert set(output.unique().tolist()) <= {0.0, 1.0}
    assert set(c_n.unique().tolist()) <= {0.0, 1.0}


def reference_bptt(x, h0, c0, w_ih, w_hh, b_ih, b_hh, upstream, cell_grad, theta1, theta2, alpha1, alpha2, scale=1.0,
                   beta=1.0):
    """The equations of docs/model.md written out: forward, then dL/ds_t = gamma [g_a1(s_t - theta1) *]
    (o_t dL/dh_t + f_{t+1} dL/ds_{t+1}) and the gate derivatives, by hand; dL/dh_{t-1} gets
    beta da_t W_hh (recurrent_grad_scale)."""
    T = x.shape[0]
    hs, cs, cache = [h0], [c0], []
    for t in range(T):
        a = x[t] @ w_ih.T + b_ih + hs[-1] @ w_hh.T + b_hh
        a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
        i, f, o = [(v - theta1 > 0).double() for v in (a_i, a_f, a_o)]
        g = (a_g - theta2 > 0).double()
        s = f * cs[-1] + i * g
        c = s.clamp(max=1.0)
        cs.append(c)
        hs.append(o * c)
        cache.append((a_i, a_f, a_g, a_o, i, f, g, o, s))
    grads = {k: torch.zeros_like(v) for k, v in (("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih))}
    dx = torch.zeros_like(x)
    dh_next = torch.zeros_like(h0)  # W_hh^T da_{t+1}
    ds_next = torch.zeros_like(c0)  # dL/ds_{t+1}
    f_next = torch.zeros_like(c0)
    for t in reversed(range(T)):
        a_i, a_f, a_g, a_o, i, f, g, o, s = cache[t]
        dh = upstream[t] + dh_next
        dc = o * dh + f_next * ds_next
        ds = {"straight_through": dc, "clamp": (s <= 1).to(dc.dtype) * dc,
              "surrogate": gaussian(s - theta1, alpha1) * dc}[cell_grad] * scale
        da_i = ds * g * gaussian(a_i - theta1, alpha1)
        da_f = ds * cs[t] * gaussian(a_f - theta1, alpha1)
        da_g = ds * i * gaussian(a_g - theta2, alpha2)
        da_o = dh * cs[t + 1] * gaussian(a_o - theta1, alpha1)
        da = torch.cat([da_i, da_f, da_g, da_o], dim=1)
        grads["w_ih"] += da.T @ x[t]
        grads["w_hh"] += da.T @ hs[t]
        grads["b_ih"] += da.sum(0)
        dx[t] = da @ w_ih
        dh_next = beta * da @ w_hh
        ds_next, f_next = ds, f
    grads["x"], grads["h0"], grads["c0"] = dx, dh_next, f_next * ds_next
    return torch.stack(hs[1:]), grads


def reference_bptt_analog(x, h0, c0, w_ih, w_hh, b_ih, b_hh, decay, upstream, upstream_c, cell, beta=1.0, w=1.0,
                          theta1=0.1, theta2=0.1, alpha1=4.0, alpha2=0.3):
    """The analog cells of docs/model.md written out. Forward: phi_t = decay f_t (leaky) or sigma(a_f)
    (graded_forget), s_t = phi_t c_{t-1} + w i_t g_t, c_t = min(s_t, 1), h_t = o_t H(c_t - theta1).
    Backward (upstream: dL/dh_t from above, upstream_c: dL/dc_T):
    dL/dc_t = o_t g_a1(c_t - theta1) dL/dh_t + phi_{t+1} dL/ds_{t+1}, dL/ds_t = 1[s_t <= 1] dL/dc_t,
    dL/da_i = w dL/ds_t g_t g_a1(a_i - theta1), dL/da_g = w dL/ds_t i_t g_a2(a_g - theta2),
    dL/da_f = dL/ds_t c_{t-1} dphi/da_f, dL/ddecay = sum dL/ds_t f_t c_{t-1}."""
    T = x.shape[0]
    hs, cs, cache = [h0], [c0], []
    for t in range(T):
        a = x[t] @ w_ih.T + b_ih + hs[-1] @ w_hh.T + b_hh
        a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
        i, f, o = [(v - theta1 > 0).double() for v in (a_i, a_f, a_o)]
        g = (a_g - theta2 > 0).double()
        if cell == "leaky":
            phi, dphi = decay * f, decay * gaussian(a_f - theta1, alpha1)
        else:
            phi = torch.sigmoid(a_f)
            dphi = phi * (1 - phi)
        s = phi * cs[-1] + w * i * g
        c = s.clamp(max=1.0)
        cs.append(c)
        hs.append(o * (c > theta1).double())
        cache.append((a_i, a_g, a_o, i, f, g, o, s, phi, dphi))
    grads = {k: torch.zeros_like(v) for k, v in (("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih))}
    grads["decay"] = torch.zeros(w_hh.shape[1], dtype=x.dtype)
    dx = torch.zeros_like(x)
    dh_next = torch.zeros_like(h0)
    ds_next = upstream_c  # a step T + 1 with phi = 1 that passes dL/dc_T on
    phi_next = torch.ones_like(c0)
    for t in reversed(range(T)):
        a_i, a_g, a_o, i, f, g, o, s, phi, dphi = cache[t]
        c = cs[t + 1]
        dh = upstream[t] + dh_next
        dc = o * gaussian(c - theta1, alpha1) * dh + phi_next * ds_next
        ds = (s <= 1).double() * dc
        da = torch.cat([w * ds * g * gaussian(a_i - theta1, alpha1), ds * cs[t] * dphi,
                        w * ds * i * gaussian(a_g - theta2, alpha2),
                        dh * (c > theta1).double() * gaussian(a_o - theta1, alpha1)],
                       dim=1)
        grads["decay"] += (ds * f * cs[t]).sum(0)
        grads["w_ih"] += da.T @ x[t]
        grads["w_hh"] += da.T @ hs[t]
        grads["b_ih"] += da.sum(0)
        dx[t] = da @ w_ih
        dh_next = beta * da @ w_hh
        ds_next, phi_next = ds, phi
    grads["x"], grads["h0"], grads["c0"] = dx, dh_next, phi_next * ds_next
    return torch.stack(hs[1:]), torch.stack(cs[1:]), grads


@pytest.mark.parametrize("engine", ["reference", "auto", pytest.param("triton", marks=pytest.mark.skipif(
    not triton_interpreted(), reason="the triton engine on CPU tensors needs Triton's interpreter"))])
@pytest.mark.parametrize("cell_grad, scale, beta", [("straight_through", 1.0, 1.0), ("surrogate", 1.0, 1.0), ("clamp", 1.0, 1.0),
                                                    ("clamp", 0.9, 1.0), ("straight_through", 0.5, 1.0), ("surrogate", 3.0, 1.0),
                                                    ("surrogate", 1.0, 0.0), ("clamp", 1.0, 0.4)])
def test_gradients_equal_the_spec_backward(cell_grad, scale, beta, engine):
    """Also with recurrent_grad_scale beta: dL/dh_{t-1} gets beta da_t W_hh, nothing else changes."""
    torch.manual_seed(1)
    T, B, I, H = 12, 5, 6, 7
    layer = SpikingLSTM(I, H, cell_grad=cell_grad, cell_grad_scale=scale, recurrent_grad_scale=beta, init="normal",
                        engine=engine).double()
    with torch.no_grad():
        layer.bias_ih_l0.normal_(0, 0.5)
        layer.bias_hh_l0.normal_(0, 0.5)
    x = (torch.rand(T, B, I, dtype=torch.float64) < 0.5).double().requires_grad_()
    h0 = (torch.rand(B, H, dtype=torch.float64) < 0.5).double().requires_grad_()
    c0 = (torch.rand(B, H, dtype=torch.float64) < 0.5).double().requires_grad_()
    upstream = torch.randn(T, B, H, dtype=torch.float64)

    output, _ = layer(x, (h0.unsqueeze(0), c0.unsqueeze(0)))
    (output * upstream).sum().backward()

    w_ih, w_hh, b_ih, b_hh = (t.detach() for t in layer.layer_parameters(0))
    ref_out, ref = reference_bptt(
        x.detach(), h0.detach(), c0.detach(), w_ih, w_hh, b_ih, b_hh, upstream, cell_grad, 0.1, 0.1, 4.0, 0.3, scale, beta
    )
    assert torch.equal(output.detach(), ref_out)
    assert ref["w_ih"].abs().sum() > 0  # the example exercises the surrogates
    if beta != 1.0:  # and feels beta
        exact = reference_bptt(x.detach(), h0.detach(), c0.detach(), w_ih, w_hh, b_ih, b_hh, upstream, cell_grad, 0.1, 0.1,
                               4.0, 0.3, scale)[1]
        assert not torch.allclose(ref["w_ih"], exact["w_ih"])
    torch.testing.assert_close(layer.weight_ih_l0.grad, ref["w_ih"])
    torch.testing.assert_close(layer.weight_hh_l0.grad, ref["w_hh"])
    torch.testing.assert_close(layer.bias_ih_l0.grad, ref["b_ih"])
    torch.testing.assert_close(layer.bias_hh_l0.grad, ref["b_ih"])
    torch.testing.assert_close(x.grad, ref["x"])
    torch.testing.assert_close(h0.grad, ref["h0"])
    torch.testing.assert_close(c0.grad, ref["c0"])


@pytest.mark.parametrize("engine", ["reference", "auto", "torch", pytest.param("triton", marks=pytest.mark.skipif(
    not triton_interpreted(), reason="the triton engine on CPU tensors needs Triton's interpreter"))])
@pytest.mark.parametrize("cell", ["leaky", "graded_forget"])
@pytest.mark.parametrize("beta, w", [(1.0, 1.0), (0.5, 1.0), (1.0, 0.3)])
def test_analog_cells_equal_their_equations_forward_and_backward(cell, beta, w, engine):
    """Also with recurrent_grad_scale beta and write_scale w."""
    torch.manual_seed(7)
    T, B, I, H = 14, 5, 4, 6
    layer = SpikingLSTM(I, H, cell=cell, recurrent_grad_scale=beta, write_scale=w, decay_steps=20, init="normal",
                        engine=engine).double()
    with torch.no_grad():
        layer.bias_ih_l0.normal_(0, 0.5)
        layer.bias_ih_l0[H:2 * H] += 1.0  # forget gates open often, so cells hold and fade
    x = (torch.rand(T, B, I, dtype=torch.float64) < 0.5).double().requires_grad_()
    h0 = (torch.rand(B, H, dtype=torch.float64) < 0.5).double().requires_grad_()
    c0 = torch.rand(B, H, dtype=torch.float64).requires_grad_()
    upstream = torch.randn(T, B, H, dtype=torch.float64)
    output, (_, c_n) = layer(x, (h0.unsqueeze(0), c0.unsqueeze(0)))
    (output * upstream).sum().add(c_n.sum()).backward()
    w_ih, w_hh, b_ih, b_hh = (t.detach() for t in layer.layer_parameters(0))
    decay = None if cell == "graded_forget" else torch.sigmoid(layer.decay_logit_l0.detach())
    upstream_c = torch.ones(B, H, dtype=torch.float64)  # the loss adds sum(c_T)
    ref_h, ref_c, ref = reference_bptt_analog(x.detach(), h0.detach(), c0.detach(), w_ih, w_hh, b_ih, b_hh, decay,
                                              upstream, upstream_c, cell, beta, w)
    assert torch.equal(output.detach(), ref_h)
    assert set(output.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(c_n[0].detach(), ref_c[-1])
    assert ref_c.min() >= 0 and ref_c.max() <= 1 and ((ref_c > 0) & (ref_c < 1)).any()  # real values, clamped at 1
    assert ref["w_ih"].abs().sum() > 0
    for name, got in (("w_ih", layer.weight_ih_l0.grad), ("w_hh", layer.weight_hh_l0.grad), ("b_ih", layer.bias_ih_l0.grad),
                      ("x", x.grad), ("h0", h0.grad), ("c0", c0.grad)):
        torch.testing.assert_close(got, ref[name], msg=name)
    if cell == "leaky":  # lambda = sigmoid(rho)
        assert ref["decay"].abs().sum() > 0
        torch.testing.assert_close(layer.decay_logit_l0.grad, ref["decay"] * decay * (1 - decay))


@pytest.mark.parametrize("surrogate", ["gaussian", "piecewise_linear", "fast_sigmoid", "atan", "straight_through"])
@pytest.mark.parametrize("cell_grad", ["straight_through", "surrogate", "clamp"])
def test_gradients_reach_every_parameter(surrogate, cell_grad):
    torch.manual_seed(2)
    layer = SpikingLSTM(5, 16, 3, surrogate=surrogate, alpha1=2.0, alpha2=1.0, cell_grad=cell_grad, init="normal")
    x = (torch.rand(20, 8, 5) < 0.5).float()
    output, (h_n, c_n) = layer(x)
    (output.sum() + c_n.sum()).backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_parameter_names_match_nn_lstm():
    lstm = nn.LSTM(3, 4, 2)
    slstm = SpikingLSTM(3, 4, 2)
    assert [n for n, _ in slstm.named_parameters()] == [n for n, _ in lstm.named_parameters()]
    slstm.load_state_dict(lstm.state_dict())
    assert torch.equal(slstm.weight_hh_l1, lstm.weight_hh_l1)


@pytest.mark.parametrize("cell_kind", ["binary", "leaky", "graded_forget"])
def test_cell_equals_one_layer_sequence(cell_kind):
    torch.manual_seed(3)
    layer = SpikingLSTM(4, 6, init="normal", cell=cell_kind)
    cell = SpikingLSTMCell(4, 6, init="normal", cell=cell_kind)
    cell.load_state_dict({k[: -len("_l0")]: v for k, v in layer.state_dict().items()})
    x = (torch.rand(9, 2, 4) < 0.5).float()
    state = None
    outputs = []
    for x_t in x:
        state = cell(x_t, state)
        outputs.append(state[0])
    assert torch.equal(torch.stack(outputs), layer(x)[0])


def test_initialisations():
    torch.manual_seed(4)
    he = SpikingLSTM(300, 200, init="he")
    assert he.weight_ih_l0.std().item() == pytest.approx(math.sqrt(2 / 500), rel=0.02)
    assert he.bias_ih_l0.abs().sum() == 0 and he.bias_hh_l0.abs().sum() == 0
    normal = SpikingLSTM(300, 200, init="normal")
    assert normal.weight_hh_l0.std().item() == pytest.approx(1.0, rel=0.02)
    pytorch = SpikingLSTM(300, 200, init="pytorch")
    bound = 1 / math.sqrt(200)
    assert pytorch.weight_ih_l0.abs().max() <= bound and pytorch.bias_ih_l0.abs().max() > 0.9 * bound


def test_forget_bias_starts_the_forget_gate_open_in_both_backbones():
    from snn_lstm.models import build_model

    torch.manual_seed(5)
    hidden = 16
    forget = slice(hidden, 2 * hidden)
    spiking = SpikingLSTM(3, hidden, num_layers=2, forget_bias=2.5)
    plain = build_model({"name": "lstm", "hidden_size": hidden, "num_layers": 2, "forget_bias": 2.5}, 3, 4, "last").backbone
    for lstm in (spiking, plain):
        for layer in range(2):
            b_ih, b_hh = getattr(lstm, f"bias_ih_l{layer}"), getattr(lstm, f"bias_hh_l{layer}")
            assert torch.equal(b_ih[forget] + b_hh[forget], torch.full((hidden,), 2.5))
    # the other gates keep the init's biases: zero for he, PyTorch's uniform for nn.LSTM
    assert spiking.bias_ih_l0[:hidden].abs().sum() == 0 and plain.bias_ih_l0[:hidden].abs().sum() > 0
    # with b_f = 2.5 far above theta1, every forget gate is open from the first step on
    _, _, records = spiking.forward_with_spikes(torch.zeros(20, 2, 3))
    assert bool(unpack_spikes(records[0])["f"].eq(1).all())
    closed = SpikingLSTM(3, hidden)
    _, _, records = closed.forward_with_spikes(torch.zeros(20, 2, 3))
    assert bool(unpack_spikes(records[0])["f"].eq(0).all())  # zero biases: a_f = 0 < theta1


def test_chrono_init_spreads_the_forget_bias_over_time_scales():
    torch.manual_seed(6)
    hidden, steps = 2000, 784
    lstm = SpikingLSTM(1, hidden, chrono_steps=steps)
    b_f = lstm.bias_ih_l0[hidden:2 * hidden] + lstm.bias_hh_l0[hidden:2 * hidden]
    b_i = lstm.bias_ih_l0[:hidden] + lstm.bias_hh_l0[:hidden]
    assert torch.equal(b_i, -b_f)
    assert b_f.min() >= 0 and b_f.max() <= math.log(steps - 1)
    # exp(b_f) is uniform on [1, T - 1]
    assert b_f.exp().mean().item() == pytest.approx(steps / 2, rel=0.05)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"forget_bias": 1.0, "chrono_steps": 100}, "keep one"),
        ({"chrono_steps": 2}, "at least 3"),
        ({"forget_bias": 1.0, "bias": False}, "need bias=True"),
        ({"forget_bias": float("nan")}, "finite"),
    ],
)
def test_bad_forget_gate_starts_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        SpikingLSTM(2, 3, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"theta1": 1.0}, "theta1"),
        ({"theta2": -0.1}, "theta2"),
        ({"cell_grad": "clip"}, "cell_grad"),
        ({"cell_grad_scale": 0.0}, "cell_grad_scale"),
        ({"cell_grad_scale": float("nan")}, "cell_grad_scale"),
        ({"init": "xavier"}, "init"),
        ({"alpha2": 0.0}, "positive"),
        ({"surrogate": "relu"}, "unknown surrogate"),
        ({"recurrent_grad_scale": 1.5}, "recurrent_grad_scale"),
        ({"recurrent_grad_scale": -0.1}, "recurrent_grad_scale"),
        ({"cell": "lif"}, "model.cell must be one of"),
        ({"cell": "leaky", "cell_grad_scale": 0.9}, "applies to the binary cell"),
        ({"cell": "leaky", "decay_steps": 1}, "decay_steps"),
        ({"cell": "leaky", "write_scale": 0.0}, "write_scale must lie in"),
        ({"cell": "graded_forget", "write_scale": 1.5}, "write_scale must lie in"),
        ({"write_scale": 0.5}, "applies to the analog cells"),
    ],
)
def test_bad_options_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        SpikingLSTM(2, 3, **kwargs)


def test_unknown_engine_is_a_user_error():
    with pytest.raises(UserError, match="engine"):
        SpikingLSTM(2, 3, engine="fastest")


def test_bad_sizes_are_user_errors():
    with pytest.raises(UserError, match="hidden_size"):
        SpikingLSTM(2, 0)


def test_a_leaky_cell_fades_by_its_decay_and_stops_firing_below_theta1():
    """One write (i = g = 1) into an empty cell, then the forget gate open and no writes:
    c_k = lambda^k, and h = o H(c - theta1) fires while lambda^k > theta1."""
    layer = SpikingLSTM(1, 1, cell="leaky", engine="reference")
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.tensor([[1.0], [0.0], [1.0], [0.0]]))  # the input opens i and g
        layer.weight_hh_l0.zero_()
        layer.bias_ih_l0.copy_(torch.tensor([0.0, 1.0, 0.0, 1.0]))  # f and o always open
        layer.bias_hh_l0.zero_()
        layer.decay_logit_l0.fill_(math.log(0.8 / 0.2))  # lambda = 0.8
    x = torch.zeros(12, 1, 1)
    x[0] = 1.0
    output, (_, c_n) = layer(x)
    expected_c = 0.8 ** torch.arange(12, dtype=torch.float32)
    expected_h = (expected_c > 0.1).float()  # 0.8^10 = 0.107 > 0.1 >= 0.8^11
    assert torch.equal(output.view(-1), expected_h) and expected_h[10] == 1 and expected_h[11] == 0
    torch.testing.assert_close(c_n.view(()), expected_c[-1])
    for engine in ("auto", "torch"):
        fused = SpikingLSTM(1, 1, cell="leaky", engine=engine)
        fused.load_state_dict(layer.state_dict())
        assert torch.equal(fused(x)[0], output)


def test_a_cell_with_write_scale_integrates_its_writes_and_fades():
    """write_scale w: each write adds w (up to 1), so the cell counts writes; with lambda = 0.9
    three writes give c = 0.25, 0.475, 0.6775, then c fades by 0.9 per step. With w = 1 every
    write sets the cell to 1, whatever it held."""
    x = torch.zeros(8, 1, 1)
    x[:3] = 1.0
    cells = {}
    for w in (0.25, 1.0):
        layer = SpikingLSTM(1, 1, cell="leaky", write_scale=w, engine="reference")
        with torch.no_grad():
            layer.weight_ih_l0.copy_(torch.tensor([[1.0], [0.0], [1.0], [0.0]]))  # the input opens i and g
            layer.weight_hh_l0.zero_()
            layer.bias_ih_l0.copy_(torch.tensor([0.0, 1.0, 0.0, 1.0]))  # f and o always open
            layer.bias_hh_l0.zero_()
            layer.decay_logit_l0.fill_(math.log(0.9 / 0.1))  # lambda = 0.9
        c = []
        state = None
        for t in range(8):
            output, state = layer(x[t:t + 1], state)
            c.append(state[1].item())
        cells[w] = torch.tensor(c)
        for engine in ("auto", "torch"):
            fused = SpikingLSTM(1, 1, cell="leaky", write_scale=w, engine=engine)
            fused.load_state_dict(layer.state_dict())
            torch.testing.assert_close(fused(x)[1][1].view(()), cells[w][-1])
    written = torch.tensor([0.25, 0.475, 0.6775])
    torch.testing.assert_close(cells[0.25][:3], written)
    torch.testing.assert_close(cells[0.25][3:], 0.6775 * 0.9 ** torch.arange(1.0, 6.0))
    torch.testing.assert_close(cells[1.0], torch.cat([torch.ones(3), 0.9 ** torch.arange(1.0, 6.0)]))


def test_leaky_decays_start_spread_over_time_scales():
    torch.manual_seed(8)
    layer = SpikingLSTM(1, 4000, cell="leaky", decay_steps=784)
    tau = -1.0 / torch.log(torch.sigmoid(layer.decay_logit_l0.detach().double()))
    assert tau.min() >= 1.0 - 1e-6 and tau.max() <= 784 * (1 + 1e-6)
    assert torch.log(tau).mean().item() == pytest.approx(math.log(784) / 2, rel=0.05)  # log-uniform
    assert [n for n, _ in SpikingLSTM(2, 3, 2, cell="leaky").named_parameters()][-1] == "decay_logit_l1"
    assert not any("decay" in n for n, _ in SpikingLSTM(2, 3, cell="graded_forget").named_parameters())


def test_analog_cells_refuse_what_they_do_not_run():
    from snn_lstm.spiking.fused import spiking_lstm_layer

    x = torch.zeros(3, 2, 2)
    with pytest.raises(UserError, match="matmul_dtype=float32"):
        SpikingLSTM(2, 3, cell="leaky", matmul_dtype="bfloat16")
    layer = SpikingLSTM(2, 3, cell="leaky")
    with pytest.raises(ValueError, match="matmul_dtype=float32"):  # the layer function, called directly
        spiking_lstm_layer(x, torch.zeros(2, 3), torch.zeros(2, 3), *layer.layer_parameters(0), layer.spike,
                           decay_logit=layer.decay_logit_l0, matmul_dtype="bfloat16")
    with pytest.raises(ValueError, match=r"c0 must be in \[0, 1\]"):
        SpikingLSTM(2, 3, cell="graded_forget")(x, (torch.zeros(1, 2, 3), torch.full((1, 2, 3), 1.5)))


@pytest.mark.parametrize("overrides, message", [
    (["model.engine=triton"], "the triton engine runs on CUDA GPUs"),
    (["model.cell=leaky", "model.engine=triton"], "the triton engine runs on CUDA GPUs"),
    (["model.cell=graded_forget", "model.matmul_dtype=bfloat16"], "matmul_dtype=float32"),
    (["model.cell=leaky", "model.cell_grad_scale=0.5"], "applies to the binary cell"),
])
def test_an_engine_or_cell_this_machine_cannot_run_is_one_line(tmp_path, monkeypatch, overrides, message):
    """Options each valid alone that do not go together here: exit 2 and one line, not an internal error."""
    from conftest import run_verb

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # as on a machine without a GPU
    outcome = run_verb(["train", "trainer=smoke", "tracking=none", f"paths.run_dir={tmp_path}", *overrides], tmp_path)
    assert outcome.code == 2 and len(outcome.lines) == 1, outcome.stderr[-2000:]
    assert outcome.lines[0].startswith("snnlstm train: error: ") and message in outcome.lines[0]
    assert not (tmp_path / "sine").exists() or not any((tmp_path / "sine").rglob("*.pt"))

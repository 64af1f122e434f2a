"""The fused multi-step spiking LSTM (both engines) against the step-by-step
autograd reference: identical spikes and states, gradients to 1e-5 relative.

Exact equality of spikes is asserted in float64: the fused path sums the input and
recurrent products in another order, and in float32 a pre-activation within an
ulp of a threshold may then round to the other side.
"""

import itertools
import logging

import pytest
import torch

from snn_lstm.errors import UserError
from snn_lstm.spiking import SpikingLSTM
from snn_lstm.spiking.fused import compiled_kernels, warn_if_bfloat16_is_slow_here

SURROGATES = {  # name -> (alpha1, alpha2): wide enough that many units carry gradient
    "gaussian": (4.0, 0.3),
    "piecewise_linear": (3.33, 0.91),
    "fast_sigmoid": (0.25, 0.91),
    "atan": (0.38, 1.4),
    "straight_through": (1.67, 0.46),
}
SHAPES = [  # (T, B, I, H, layers)
    (7, 5, 4, 6, 1),
    (1, 3, 2, 5, 2),  # a single step
    (6, 1, 3, 4, 3),  # batch 1, three layers
]
ENGINES = ["torch", "cpp"]


def make_pair(engine, shape, surrogate, cell_grad, theta1=0.1, theta2=0.1, seed=0, matmul_dtype="float32"):
    T, B, I, H, layers = shape
    torch.manual_seed(seed)
    alpha1, alpha2 = SURROGATES[surrogate]
    kwargs = dict(theta1=theta1, theta2=theta2, surrogate=surrogate, alpha1=alpha1, alpha2=alpha2, cell_grad=cell_grad, init="normal")
    reference = SpikingLSTM(I, H, layers, engine="reference", **kwargs).double()
    fused = SpikingLSTM(I, H, layers, engine=engine, matmul_dtype=matmul_dtype, **kwargs).double()
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0.0, 0.7)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def run(model, x, state, up_h, up_hn, up_cn):
    x = x.clone().requires_grad_()
    h0, c0 = (s.clone().requires_grad_() for s in state)
    output, (h_n, c_n) = model(x, (h0, c0))
    ((output * up_h).sum() + (h_n * up_hn).sum() + (c_n * up_cn).sum()).backward()
    grads = {"x": x.grad, "h0": h0.grad, "c0": c0.grad}
    grads.update({name: p.grad for name, p in model.named_parameters()})
    return output.detach(), h_n.detach(), c_n.detach(), grads


def assert_close_relative(actual, expected, name):
    scale = expected.abs().max().clamp(min=1e-12)
    assert (actual - expected).abs().max() <= 1e-5 * scale, name


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("surrogate, cell_grad", list(itertools.product(SURROGATES, ["straight_through", "surrogate"])))
def test_fused_equals_reference(engine, shape, surrogate, cell_grad):
    reference, fused = make_pair(engine, shape, surrogate, cell_grad)
    T, B, I, H, layers = shape
    x = (torch.rand(T, B, I, dtype=torch.float64) < 0.5).double()
    state = tuple((torch.rand(layers, B, H, dtype=torch.float64) < 0.5).double() for _ in range(2))
    up_h = torch.randn(T, B, H, dtype=torch.float64)
    up_hn, up_cn = torch.randn(layers, B, H, dtype=torch.float64), torch.randn(layers, B, H, dtype=torch.float64)

    out_ref, hn_ref, cn_ref, grads_ref = run(reference, x, state, up_h, up_hn, up_cn)
    out, hn, cn, grads = run(fused, x, state, up_h, up_hn, up_cn)

    assert torch.equal(out, out_ref) and torch.equal(hn, hn_ref) and torch.equal(cn, cn_ref)
    assert any(g.abs().sum() > 0 for g in grads_ref.values())
    for name, expected in grads_ref.items():
        assert_close_relative(grads[name], expected, name)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("thetas", [(0.0, 0.0), (0.5, 0.25), (0.9, 0.6)])
def test_thresholds(engine, thetas):
    reference, fused = make_pair(engine, (5, 4, 3, 6, 2), "gaussian", "surrogate", *thetas)
    x = (torch.rand(5, 4, 3, dtype=torch.float64) < 0.5).double()
    zeros = torch.zeros(2, 4, 6, dtype=torch.float64)
    up = torch.randn(5, 4, 6, dtype=torch.float64)
    out_ref, _, _, grads_ref = run(reference, x, (zeros, zeros), up, zeros, zeros)
    out, _, _, grads = run(fused, x, (zeros, zeros), up, zeros, zeros)
    assert torch.equal(out, out_ref)
    for name, expected in grads_ref.items():
        assert_close_relative(grads[name], expected, name)


@pytest.mark.parametrize("engine", ENGINES)
def test_float32_real_valued_input_without_state(engine):
    """The everyday case: float32, real inputs, default zero state; gradients agree
    wherever the spikes agree (they do on this seed)."""
    reference, fused = make_pair(engine, (20, 16, 10, 32, 2), "gaussian", "straight_through")
    reference, fused = reference.float(), fused.float()
    x = torch.randn(20, 16, 10)
    out_ref, _ = reference(x)
    out, _ = fused(x)
    assert torch.equal(out, out_ref)
    out_ref.sum().backward()
    out.sum().backward()
    for (name, p_ref), p in zip(reference.named_parameters(), fused.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-5 * p_ref.grad.abs().max().item(), msg=name)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2]], ids=lambda s: "x".join(map(str, s)))
def test_bfloat16_products_against_the_reference(engine, shape):
    """Weights on a grid of 1/8 in [-1, 1]: every forward product of 0/1 spikes is
    then exact in bfloat16, so the spikes must equal the float64 reference exactly;
    the gradients differ only by the rounding of da to 8 significant bits."""
    reference, fused = make_pair(engine, shape, "gaussian", "surrogate", matmul_dtype="bfloat16")
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name.startswith("weight"):
                p.copy_((p * 8).round().clamp(-8, 8) / 8)
    fused.load_state_dict(reference.state_dict())
    T, B, I, H, layers = shape
    x = (torch.rand(T, B, I, dtype=torch.float64) < 0.5).double()
    state = tuple((torch.rand(layers, B, H, dtype=torch.float64) < 0.5).double() for _ in range(2))
    ups = torch.randn(T, B, H, dtype=torch.float64), torch.randn(layers, B, H, dtype=torch.float64), torch.randn(layers, B, H, dtype=torch.float64)

    out_ref, hn_ref, cn_ref, grads_ref = run(reference, x, state, *ups)
    out, hn, cn, grads = run(fused, x, state, *ups)

    assert torch.equal(out, out_ref) and torch.equal(hn, hn_ref) and torch.equal(cn, cn_ref)
    for name, expected in grads_ref.items():
        assert grads[name].dtype == torch.float64, name
        scale = expected.abs().max()
        assert scale > 0 and (grads[name] - expected).abs().max() <= 2e-2 * scale, name
    # and the products did run in bfloat16: float64 ones would match to the last bit
    assert any(not torch.equal(grads[name], expected) for name, expected in grads_ref.items())


def test_bfloat16_needs_a_fused_engine():
    with pytest.raises(UserError, match="matmul_dtype=float32"):
        SpikingLSTM(2, 3, engine="reference", matmul_dtype="bfloat16")
    with pytest.raises(UserError, match="float32, bfloat16"):
        SpikingLSTM(2, 3, matmul_dtype="float16")


def test_bfloat16_warns_on_a_cpu_without_bfloat16_arithmetic(monkeypatch, caplog):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    logger = logging.getLogger("snnlstm.fused")
    logger.addHandler(caplog.handler)  # whatever logging config an earlier test left behind
    warn_if_bfloat16_is_slow_here.cache_clear()
    try:
        SpikingLSTM(2, 3, matmul_dtype="bfloat16")(torch.zeros(4, 1, 2))
    finally:
        logger.removeHandler(caplog.handler)
        warn_if_bfloat16_is_slow_here.cache_clear()
    assert "without AVX512-BF16 or AMX" in caplog.text


def test_the_cpp_engine_builds_here():
    """CI machines have a compiler; a failed build would silently cost the speed."""
    assert compiled_kernels() is not None


@pytest.mark.parametrize("engine", ENGINES)
def test_binary_state_is_required(engine):
    layer = SpikingLSTM(2, 3, engine=engine)
    half = torch.full((1, 1, 3), 0.5)
    with pytest.raises(ValueError, match="binary"):
        layer(torch.zeros(4, 1, 2), (half, half))


@pytest.mark.parametrize("engine", ENGINES)
def test_second_backward_is_refused_clearly(engine):
    layer = SpikingLSTM(2, 3, engine=engine, init="normal")
    output, _ = layer(torch.ones(4, 2, 2))
    output.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="retain_graph"):
        output.sum().backward()


@pytest.mark.parametrize("engine", ENGINES)
def test_inference_saves_nothing(engine):
    layer = SpikingLSTM(3, 8, engine=engine)
    with torch.no_grad():
        output, _ = layer(torch.rand(5, 2, 3))
    assert output.grad_fn is None and set(output.unique().tolist()) <= {0.0, 1.0}


def test_backward_memory_is_compact():
    """Saved for backward: 4H floats of surrogates and one byte of state per unit and step."""
    T, B, I, H = 50, 8, 3, 16
    layer = SpikingLSTM(I, H, engine="cpp")
    saved = {}

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(torch.rand(T, B, I))
    floats = 4 * T * B * H * 4
    bits = T * B * H
    assert sum(saved.values()) <= floats + bits + 4 * (T * B * I + 2 * B * H + 4 * H * (I + H))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("surrogate, cell_grad", list(itertools.product(SURROGATES, ["straight_through", "surrogate"])))
def test_torch_engine_on_cuda_equals_the_cpu_reference(surrogate, cell_grad):
    reference, fused = make_pair("torch", (9, 6, 5, 7, 2), surrogate, cell_grad)
    fused = fused.cuda()
    x = (torch.rand(9, 6, 5, dtype=torch.float64) < 0.5).double()
    state = tuple((torch.rand(2, 6, 7, dtype=torch.float64) < 0.5).double() for _ in range(2))
    ups = torch.randn(9, 6, 7, dtype=torch.float64), torch.randn(2, 6, 7, dtype=torch.float64), torch.randn(2, 6, 7, dtype=torch.float64)
    out_ref, hn_ref, cn_ref, grads_ref = run(reference, x, state, *ups)
    out, hn, cn, grads = run(fused, x.cuda(), tuple(s.cuda() for s in state), *(u.cuda() for u in ups))
    assert torch.equal(out.cpu(), out_ref) and torch.equal(hn.cpu(), hn_ref) and torch.equal(cn.cpu(), cn_ref)
    for name, expected in grads_ref.items():
        assert_close_relative(grads[name].cpu(), expected, name)

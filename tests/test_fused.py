"""The fused multi-step spiking LSTM (every engine) against the step-by-step
autograd reference: identical spikes and states, gradients to 1e-5 relative.

Exact equality of spikes is asserted in float64: the fused path sums the input and
recurrent products in another order, and in float32 a pre-activation within an
ulp of a threshold may then round to the other side.

Without a GPU the triton engine runs in Triton's interpreter (conftest sets
TRITON_INTERPRET=1), and its kernels are also built for sm_80 and sm_90 ahead of
time; with a GPU the tests marked cuda run every engine there (`make gpu-check`).
"""

import itertools
import logging
import os
import subprocess
import sys
import threading

import pytest
import torch

import snn_lstm.spiking.fused as fused_module
from snn_lstm.errors import UserError
from snn_lstm.spiking import SpikingLSTM
from snn_lstm.spiking.fused import compiled_kernels, triton_interpreted, triton_kernels, warn_if_bfloat16_is_slow_here
from snn_lstm.spiking.surrogate import Surrogate

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
    (4, 20, 3, 40, 2),  # Triton: batch over two blocks of 16, 40 units over two blocks of 32, both ragged
]
# the triton engine on CPU tensors needs the interpreter; on a GPU machine the cuda tests run it
TRITON_ON_CPU = pytest.param("triton", marks=pytest.mark.skipif(
    not (triton_interpreted() and triton_kernels() is not None), reason="needs Triton's interpreter (TRITON_INTERPRET=1)"))
ENGINES = ["torch", "cpp", TRITON_ON_CPU]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make_pair(engine, shape, surrogate, cell_grad, theta1=0.1, theta2=0.1, seed=0, matmul_dtype="float32", cell_grad_scale=1.0,
              cell="binary"):
    T, B, I, H, layers = shape
    torch.manual_seed(seed)
    alpha1, alpha2 = SURROGATES[surrogate]
    kwargs = dict(theta1=theta1, theta2=theta2, surrogate=surrogate, alpha1=alpha1, alpha2=alpha2, cell_grad=cell_grad,
                  cell_grad_scale=cell_grad_scale, init="normal", cell=cell)
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
@pytest.mark.parametrize("surrogate, cell_grad", list(itertools.product(SURROGATES, ["straight_through", "surrogate", "clamp"])))
def test_fused_equals_reference(engine, shape, surrogate, cell_grad):
    compare_with_reference(*make_pair(engine, shape, surrogate, cell_grad), shape)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cell_grad, scale", [("straight_through", 0.5), ("surrogate", 3.0), ("clamp", 0.9)])
def test_a_scaled_cell_derivative_is_the_same_in_every_engine(engine, cell_grad, scale):
    shape = SHAPES[0]
    reference, fused = make_pair(engine, shape, "gaussian", cell_grad, cell_grad_scale=scale)
    grads = compare_with_reference(reference, fused, shape)
    unscaled, _ = make_pair(engine, shape, "gaussian", cell_grad)
    assert not torch.allclose(compare_with_reference(unscaled, unscaled, shape)["x"], grads["x"])  # gamma changed them


def compare_with_reference(reference, fused, shape):
    """The fused layer's outputs equal the reference's and its gradients match; returns them."""
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
    return grads


def compare_analog_with_reference(reference, fused, x, state, ups):
    """As compare_with_reference for the analog cells, whose real-valued c_n may differ in the last
    bit where the engines compute sigma(a_f) differently."""
    out_ref, hn_ref, cn_ref, grads_ref = run(reference, x, state, *ups)
    out, hn, cn, grads = run(fused, x, state, *ups)
    assert torch.equal(out, out_ref) and torch.equal(hn, hn_ref)
    assert_close_relative(cn, cn_ref, "c_n")
    assert ((cn_ref > 0) & (cn_ref < 1)).any()
    for name, expected in grads_ref.items():
        assert expected.abs().sum() > 0, name
        assert_close_relative(grads[name], expected, name)


# the interpreter is slow: Triton's surrogate families are checked on the binary cell, two suffice here
ANALOG_ENGINE_SURROGATES = [(engine, surrogate) for engine in ("torch", "cpp") for surrogate in SURROGATES] + [
    pytest.param("triton", surrogate, marks=TRITON_ON_CPU.marks) for surrogate in ("gaussian", "atan")]


@pytest.mark.parametrize("engine, surrogate", ANALOG_ENGINE_SURROGATES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("cell", ["leaky", "graded_forget"])
def test_analog_cells_fused_equal_reference(engine, shape, surrogate, cell):
    T, B, I, H, layers = shape
    reference, fused = make_pair(engine, shape, surrogate, "surrogate", cell=cell)
    x = (torch.rand(T, B, I, dtype=torch.float64) < 0.5).double()
    state = ((torch.rand(layers, B, H, dtype=torch.float64) < 0.5).double(), torch.rand(layers, B, H, dtype=torch.float64))
    ups = (torch.randn(T, B, H, dtype=torch.float64), torch.randn(layers, B, H, dtype=torch.float64),
           torch.randn(layers, B, H, dtype=torch.float64))
    compare_analog_with_reference(reference, fused, x, state, ups)


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
@pytest.mark.parametrize("families", [("gaussian", "atan"), ("straight_through", "piecewise_linear")])
def test_gate_and_candidate_of_different_families(engine, families):
    """SpikeParams may pair surrogates of two families; each gate gets its own."""
    reference, fused = make_pair(engine, SHAPES[0], "gaussian", "surrogate")
    gate, candidate = families
    for model in (reference, fused):
        spike = model.spike
        model.spike = type(spike)(spike.theta1, spike.theta2, Surrogate(gate, SURROGATES[gate][0]),
                                  Surrogate(candidate, SURROGATES[candidate][1]), spike.cell_grad)
    T, B, I, H, layers = SHAPES[0]
    x = (torch.rand(T, B, I, dtype=torch.float64) < 0.5).double()
    state = tuple((torch.rand(layers, B, H, dtype=torch.float64) < 0.5).double() for _ in range(2))
    ups = torch.randn(T, B, H, dtype=torch.float64), torch.randn(layers, B, H, dtype=torch.float64), torch.randn(layers, B, H, dtype=torch.float64)
    out_ref, _, _, grads_ref = run(reference, x, state, *ups)
    out, _, _, grads = run(fused, x, state, *ups)
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
@pytest.mark.parametrize("matmul_dtype, tolerance", [("bfloat16", 2e-2), ("float16", 2e-3)])
def test_reduced_precision_products_against_the_reference(engine, shape, matmul_dtype, tolerance):
    """Weights on a grid of 1/8 in [-1, 1]: every forward product of 0/1 spikes is
    then exact in bfloat16 and float16, so the spikes must equal the float64 reference
    exactly; the gradients differ only by the rounding of da to 8 (11) significant bits."""
    if engine == "triton" and matmul_dtype == "bfloat16" and triton_interpreted():
        pytest.skip("Triton's interpreter has no bfloat16 products (the GPU tests and the sm_80/90 builds check them)")
    reference, fused = make_pair(engine, shape, "gaussian", "surrogate", matmul_dtype=matmul_dtype)
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
        assert scale > 0 and (grads[name] - expected).abs().max() <= tolerance * scale, name
    # and the products did run in reduced precision: float64 ones would match to the last bit
    assert any(not torch.equal(grads[name], expected) for name, expected in grads_ref.items())


@pytest.mark.parametrize("matmul_dtype, min_cosine, max_error", [("bfloat16", 0.9, 0.5), ("float16", 0.97, 0.25)])
def test_reduced_precision_gradients_against_float32_on_realistic_weights(matmul_dtype, min_cosine, max_error):
    """He-initialised weights at the sequential MNIST shape, Bernoulli inputs, a loss on
    h_T after 4 steps. Rounded products move a few pre-activations across a threshold
    (measured over 8 seeds: up to 0.5% of the spikes in bfloat16, 0.1% in float16),
    and the candidate's narrow surrogate (alpha2 = 0.3) amplifies the rounding of a, so
    the gradients are near float32's but not equal: cosine >= 0.946 (0.985), norm of
    the difference <= 33% (17%) of float32's. Over 28 steps the binary trajectories part
    ways and the two gradients no longer compare (cosine down to 0.13 in bfloat16)."""
    torch.manual_seed(0)
    T, B, I, H = 4, 128, 28, 128
    exact = SpikingLSTM(I, H)
    rounded = SpikingLSTM(I, H, matmul_dtype=matmul_dtype)
    rounded.load_state_dict(exact.state_dict())
    x = (torch.rand(T, B, I) < 0.3).float()
    up = torch.randn(B, H)
    for model in (exact, rounded):
        output, _ = model(x)
        (output[-1] * up).sum().backward()
    for (name, p), q in zip(exact.named_parameters(), rounded.parameters()):
        cosine = torch.nn.functional.cosine_similarity(q.grad.flatten(), p.grad.flatten(), dim=0)
        error = (q.grad - p.grad).norm() / p.grad.norm()
        assert cosine >= min_cosine and 0 < error <= max_error, (name, cosine.item(), error.item())


def test_reduced_precision_needs_a_fused_engine():
    for matmul_dtype in ("bfloat16", "float16", "tf32"):
        with pytest.raises(UserError, match="matmul_dtype=float32"):
            SpikingLSTM(2, 3, engine="reference", matmul_dtype=matmul_dtype)
    with pytest.raises(UserError, match="float32, tf32, bfloat16, float16"):
        SpikingLSTM(2, 3, matmul_dtype="float8")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_on_the_cpu_runs_on_the_torch_engine(dtype):
    """The C++ loops are built for float32 and float64: auto hands a bfloat16 or
    float16 model to the PyTorch engine, and asking for cpp says what to do."""
    torch.manual_seed(0)
    model = SpikingLSTM(3, 8, init="normal").to(dtype)
    output, _ = model((torch.rand(5, 2, 3) < 0.5).to(dtype))
    output.sum().backward()
    assert output.dtype == dtype and set(output.unique().tolist()) <= {0.0, 1.0}
    assert model.weight_hh_l0.grad.dtype == dtype and model.weight_hh_l0.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="engine='auto' or 'torch'"):
        SpikingLSTM(3, 8, engine="cpp").to(dtype)(torch.zeros(5, 2, 3, dtype=dtype))


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


def test_loading_the_cpp_engine_leaves_the_extension_logger_as_it_was(monkeypatch):
    extension_log = logging.getLogger("torch.utils.cpp_extension")
    monkeypatch.setattr(extension_log, "level", logging.DEBUG)
    monkeypatch.setattr(fused_module, "_compiled", None)  # load again (from torch's build cache)
    assert compiled_kernels() is not None
    assert extension_log.level == logging.DEBUG


def test_the_cpp_loops_let_other_python_threads_run():
    """The time loops release the GIL: a Python thread keeps counting while a long
    forward runs in another one."""
    layer = SpikingLSTM(1, 128, engine="cpp")
    x = torch.rand(4000, 64, 1)
    running, done, counts = threading.Event(), threading.Event(), [0]

    def forward():
        running.set()
        with torch.no_grad():
            layer(x)
        done.set()

    worker = threading.Thread(target=forward)
    worker.start()
    running.wait()
    while not done.is_set():
        counts[0] += 1
    worker.join()
    assert counts[0] > 10_000


@pytest.mark.parametrize("capability", [80, 90])
def test_the_triton_kernels_build_for_gpus(tmp_path, capability):
    """Ahead-of-time builds (PTX and cubin, ptxas from the triton wheel) of every kernel
    variant, in a process without the interpreter and with an empty kernel cache."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    code = f"from snn_lstm.spiking.triton_kernels import compile_for_gpu; print(len(compile_for_gpu({capability})))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) >= 2 * 2 * 6 + 5 + 5  # the analog cells' kernels too
    assert any((tmp_path / "cache").rglob("*.cubin"))


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


@pytest.mark.parametrize("engine", ENGINES)
def test_inference_computes_no_surrogate(engine, monkeypatch):
    """Under no_grad, or when nothing requires a gradient, the forward neither computes
    the surrogates nor goes through the autograd function."""
    asked = []
    monkeypatch.setattr(fused_module, "gate_surrogates", lambda *args: asked.append("torch"))
    monkeypatch.setattr(fused_module.FusedSpikingLSTMLayer, "apply", lambda *args: asked.append("autograd"))
    kernels = compiled_kernels()

    class Recording:
        def forward_loop(self, *args):
            asked.append("cpp" if args[-1] else None)
            return kernels.forward_loop(*args)

    monkeypatch.setattr(fused_module, "compiled_kernels", lambda: Recording())
    layer = SpikingLSTM(3, 8, engine=engine)
    with torch.no_grad():
        layer(torch.rand(5, 2, 3))
    layer.requires_grad_(False)
    layer(torch.rand(5, 2, 3))
    assert [a for a in asked if a is not None] == []


def saved_bytes(layer, x) -> int:
    saved = {}

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    return sum(saved.values())


@pytest.mark.parametrize("engine, surrogate_floats", [("cpp", 4), pytest.param(*TRITON_ON_CPU.values, 0, marks=TRITON_ON_CPU.marks)])
def test_backward_memory_is_compact(engine, surrogate_floats):
    """Saved for backward: one byte of state per unit and step, the input, the initial
    state and the weights; cpp also 4H floats of surrogates (triton recomputes them)."""
    T, B, I, H = 50, 8, 3, 16
    layer = SpikingLSTM(I, H, engine=engine)
    floats = surrogate_floats * T * B * H * 4
    bits = T * B * H
    others = 4 * (T * B * I + 2 * B * H + 4 * H * (I + H + 1))
    assert bits <= saved_bytes(layer, torch.rand(T, B, I)) <= floats + bits + others


# ----------------------------------------------------------------- on a GPU (make gpu-check)
CUDA_ENGINES = ["torch", "triton"]


def run_on_cuda_and_cpu(reference, fused, shape):
    T, B, I, H, layers = shape
    x = (torch.rand(T, B, I, dtype=torch.float64) < 0.5).double()
    state = tuple((torch.rand(layers, B, H, dtype=torch.float64) < 0.5).double() for _ in range(2))
    ups = torch.randn(T, B, H, dtype=torch.float64), torch.randn(layers, B, H, dtype=torch.float64), torch.randn(layers, B, H, dtype=torch.float64)
    expected = run(reference, x, state, *ups)
    actual = run(fused.cuda(), x.cuda(), tuple(s.cuda() for s in state), *(u.cuda() for u in ups))
    out, hn, cn, grads = actual
    return expected, (out.cpu(), hn.cpu(), cn.cpu(), {k: v.cpu() for k, v in grads.items()})


@needs_cuda
@pytest.mark.parametrize("engine", CUDA_ENGINES)
@pytest.mark.parametrize("shape", [(9, 6, 5, 7, 2), (30, 37, 3, 100, 1)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("surrogate, cell_grad", list(itertools.product(SURROGATES, ["straight_through", "surrogate", "clamp"])))
def test_engines_on_cuda_equal_the_cpu_reference(engine, shape, surrogate, cell_grad):
    reference, fused = make_pair(engine, shape, surrogate, cell_grad)
    (out_ref, hn_ref, cn_ref, grads_ref), (out, hn, cn, grads) = run_on_cuda_and_cpu(reference, fused, shape)
    assert torch.equal(out, out_ref) and torch.equal(hn, hn_ref) and torch.equal(cn, cn_ref)
    for name, expected in grads_ref.items():
        assert_close_relative(grads[name], expected, name)


@needs_cuda
@pytest.mark.parametrize("engine", CUDA_ENGINES)
@pytest.mark.parametrize("matmul_dtype, tolerance", [("tf32", 2e-3), ("bfloat16", 2e-2), ("float16", 2e-3)])
def test_reduced_precision_on_cuda_against_the_cpu_reference(engine, matmul_dtype, tolerance):
    """Float32 parameters on a 1/8 grid: the forward products are exact in every
    precision, so the spikes equal the float64 reference; the gradients differ by the
    rounding of da to the operand precision."""
    shape = (12, 20, 5, 40, 2)
    reference, fused = make_pair(engine, shape, "gaussian", "surrogate", matmul_dtype=matmul_dtype)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_((p * 8).round().clamp(-8, 8) / 8)
    fused.load_state_dict(reference.state_dict())
    fused.float()
    T, B, I, H, layers = shape
    x = (torch.rand(T, B, I) < 0.5).double()
    state = tuple((torch.rand(layers, B, H) < 0.5).double() for _ in range(2))
    ups = torch.randn(T, B, H, dtype=torch.float64), torch.randn(layers, B, H, dtype=torch.float64), torch.randn(layers, B, H, dtype=torch.float64)
    out_ref, _, _, grads_ref = run(reference, x, state, *ups)
    out, _, _, grads = run(fused.cuda(), x.float().cuda(), tuple(s.float().cuda() for s in state), *(u.float().cuda() for u in ups))
    assert torch.equal(out.cpu().double(), out_ref)
    for name, expected in grads_ref.items():
        scale = expected.abs().max()
        assert scale > 0 and (grads[name].cpu().double() - expected).abs().max() <= tolerance * scale, name


@needs_cuda
@pytest.mark.parametrize("cell", ["leaky", "graded_forget"])
def test_analog_cells_on_cuda_equal_the_cpu_reference(cell):
    """auto on a GPU runs the analog cells on the triton engine."""
    shape = (30, 37, 3, 100, 2)
    T, B, I, H, layers = shape
    reference, fused = make_pair("auto", shape, "gaussian", "surrogate", cell=cell)
    x = (torch.rand(T, B, I, dtype=torch.float64) < 0.5).double()
    state = ((torch.rand(layers, B, H, dtype=torch.float64) < 0.5).double(), torch.rand(layers, B, H, dtype=torch.float64))
    ups = [torch.randn(T, B, H, dtype=torch.float64), torch.randn(layers, B, H, dtype=torch.float64),
           torch.randn(layers, B, H, dtype=torch.float64)]
    out_ref, hn_ref, cn_ref, grads_ref = run(reference, x, state, *ups)
    out, hn, cn, grads = run(fused.cuda(), x.cuda(), tuple(s.cuda() for s in state), *(u.cuda() for u in ups))
    assert torch.equal(out.cpu(), out_ref) and torch.equal(hn.cpu(), hn_ref)
    assert_close_relative(cn.cpu(), cn_ref, "c_n")
    for name, expected in grads_ref.items():
        assert_close_relative(grads[name].cpu(), expected, name)


@needs_cuda
def test_auto_takes_the_triton_engine_on_cuda():
    assert fused_module.resolve_engine("auto", torch.device("cuda")) == "triton"


@pytest.mark.parametrize("engine", ["cpp", TRITON_ON_CPU])
@pytest.mark.parametrize("bias", [-1.5, 0.0, 2.0], ids=["few spikes", "some", "most"])
def test_the_forward_product_at_every_firing_rate(engine, bias):
    """The C++ forward adds the weight rows of the units that spiked when few fire and
    takes a dense product when many do (at batch 64 the switch is near a quarter): both
    give the reference's spikes and gradients."""
    reference, fused = make_pair(engine, (6, 64, 5, 12, 1), "gaussian", "surrogate")
    with torch.no_grad():
        for model in (reference, fused):
            model.bias_hh_l0.fill_(bias)
    x = (torch.rand(6, 64, 5, dtype=torch.float64) < 0.5).double()
    state = tuple((torch.rand(1, 64, 12, dtype=torch.float64) < 0.5).double() for _ in range(2))
    ups = torch.randn(6, 64, 12, dtype=torch.float64), torch.randn(1, 64, 12, dtype=torch.float64), torch.randn(1, 64, 12, dtype=torch.float64)
    out_ref, _, _, grads_ref = run(reference, x, state, *ups)
    out, _, _, grads = run(fused, x, state, *ups)
    assert torch.equal(out, out_ref)
    rate = out_ref.mean().item()
    assert {-1.5: rate < 0.15, 0.0: 0.1 < rate < 0.6, 2.0: rate > 0.5}[bias], rate
    for name, expected in grads_ref.items():
        assert_close_relative(grads[name], expected, name)
    with torch.no_grad():
        assert torch.equal(fused(x, state)[0], out_ref)

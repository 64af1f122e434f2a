"""Each spike function: Heaviside forward, its published surrogate backward."""

import math

import pytest
import torch

from snn_lstm.errors import UserError
from snn_lstm.spiking.surrogate import DERIVATIVES, Surrogate

# The formulas written out independently of the implementation (plain math).
FORMULAS = {
    "gaussian": lambda u, a: math.exp(-u * u / a) / math.sqrt(math.pi * a),
    "piecewise_linear": lambda u, a: max(0.0, 1.0 - abs(u) / a) / a,
    "fast_sigmoid": lambda u, a: 1.0 / (1.0 + a * abs(u)) ** 2,
    "atan": lambda u, a: (a / 2.0) / (1.0 + (math.pi / 2.0 * a * u) ** 2),
    "straight_through": lambda u, a: (1.0 / (2.0 * a)) if abs(u) < a else 0.0,
}


def test_every_family_has_a_formula():
    assert set(DERIVATIVES) == set(FORMULAS)


@pytest.mark.parametrize("name", sorted(FORMULAS))
@pytest.mark.parametrize("width", [0.3, 1.0, 4.0])
def test_backward_equals_formula(name, width):
    u = torch.linspace(-3.0, 3.0, 121, dtype=torch.float64, requires_grad=True)
    upstream = torch.linspace(0.5, 2.0, 121, dtype=torch.float64)
    spike = Surrogate(name, width)(u)
    spike.backward(upstream)
    expected = torch.tensor([FORMULAS[name](v, width) for v in u.tolist()], dtype=torch.float64) * upstream
    torch.testing.assert_close(u.grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_forward_is_heaviside_with_zero_at_tie(name):
    u = torch.tensor([-1.0, -1e-7, 0.0, 1e-7, 2.0])
    assert Surrogate(name, 1.0)(u).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("name", ["gaussian", "piecewise_linear", "atan", "straight_through"])
def test_normalised_families_integrate_to_one(name):
    width = 0.7
    u = torch.linspace(-400.0, 400.0, 1_600_001, dtype=torch.float64)
    area = torch.trapezoid(Surrogate(name, width).derivative(u), u).item()
    # atan's tails decay like 1/u^2, so a finite window misses a little area;
    # the boxcar's jumps cost the trapezoid rule half a grid step at each edge.
    tolerance = {"atan": 5e-3, "straight_through": 1e-3}.get(name, 1e-4)
    assert area == pytest.approx(1.0, abs=tolerance)


def test_paper_gaussians():
    """Fig. 2d: peak heights 1/sqrt(pi * alpha) for alpha1 = 4 and alpha2 = 0.3."""
    zero = torch.zeros(1, dtype=torch.float64)
    assert Surrogate("gaussian", 4.0).derivative(zero).item() == pytest.approx(1 / math.sqrt(4 * math.pi))
    assert Surrogate("gaussian", 0.3).derivative(zero).item() == pytest.approx(1 / math.sqrt(0.3 * math.pi))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_width_is_a_user_error(bad):
    with pytest.raises(UserError, match="positive"):
        Surrogate("gaussian", bad)


def test_unknown_family_is_a_user_error():
    with pytest.raises(UserError, match="unknown surrogate 'sigmoidish'"):
        Surrogate("sigmoidish", 1.0)

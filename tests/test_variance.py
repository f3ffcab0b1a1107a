"""Tests for gradhealth.core.variance against NumPy float64 references (no keras needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradhealth.core import variance as V


def test_compute_fans_dense_and_conv():
    assert V.compute_fans((100, 10)) == (100.0, 10.0)
    assert V.compute_fans((3, 3, 16, 32)) == (144.0, 288.0)
    assert V.compute_fans((5, 4, 8)) == (20.0, 40.0)


@settings(max_examples=40, deadline=None)
@given(fan_in=st.integers(1, 400), fan_out=st.integers(1, 400))
def test_variance_scaling_formulas(fan_in, fan_out):
    shape = (fan_in, fan_out)
    assert V.expected_weight_variance("glorot_uniform", shape) == pytest.approx(2 / (fan_in + fan_out))
    assert V.expected_weight_variance("glorot_normal", shape) == pytest.approx(2 / (fan_in + fan_out))
    assert V.expected_weight_variance("he_normal", shape) == pytest.approx(2 / fan_in)
    assert V.expected_weight_variance("he_uniform", shape) == pytest.approx(2 / fan_in)
    assert V.expected_weight_variance("lecun_normal", shape) == pytest.approx(1 / fan_in)
    assert V.expected_weight_variance("orthogonal", shape) == pytest.approx(1 / max(fan_in, fan_out))


def test_glorot_uniform_formula_matches_a_uniform_draw():
    # Glorot & Bengio's uniform limit sqrt(6 / (n_in + n_out)); variance limit^2 / 3.
    rng = np.random.default_rng(0)
    limit = math.sqrt(6 / (300 + 500))
    draw = rng.uniform(-limit, limit, size=(300, 500))
    assert np.var(draw) == pytest.approx(V.expected_weight_variance("glorot_uniform", (300, 500)),
                                         rel=0.01)


def test_orthogonal_formula_matches_a_qr_draw():
    rng = np.random.default_rng(1)
    for rows, cols in ((200, 50), (50, 200)):
        q, _ = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
        w = q if rows >= cols else q.T
        assert np.mean(w**2) == pytest.approx(V.expected_weight_variance("orthogonal", (rows, cols)))


def test_random_normal_and_uniform_defaults_are_keras_defaults():
    assert V.expected_weight_variance("random_normal", (3, 3)) == pytest.approx(0.05**2)
    assert V.expected_weight_variance("random_uniform", (3, 3)) == pytest.approx(0.1**2 / 12)
    assert V.expected_weight_variance("random_normal", (3, 3), stddev=1.0) == 1.0


def test_unknown_initializer_lists_valid_names():
    with pytest.raises(ValueError, match="he_normal") as e:
        V.expected_weight_variance("kaiming", (3, 3))
    assert "kaiming" in str(e.value)


@settings(max_examples=40, deadline=None)
@given(variance=st.floats(1e-3, 1e3))
def test_gaussian_expectation_moments(variance):
    assert V.gaussian_expectation(np.square, variance) == pytest.approx(variance, rel=1e-9)
    assert V.gaussian_expectation(lambda z: z**4, variance) == pytest.approx(3 * variance**2, rel=1e-9)
    relu2 = V.gaussian_expectation(lambda z: np.maximum(z, 0) ** 2, variance)
    assert relu2 == pytest.approx(variance / 2, rel=1e-4)


def test_gaussian_expectation_matches_monte_carlo():
    rng = np.random.default_rng(0)
    z = rng.standard_normal(2_000_000) * math.sqrt(2.0)
    mc = float(np.mean(np.tanh(z) ** 2))
    assert V.gaussian_expectation(lambda t: np.tanh(t) ** 2, 2.0) == pytest.approx(mc, abs=2e-3)


def test_propagate_variance_he_relu_is_flat_and_linear_lecun_is_flat():
    n, depth = 128, 30
    relu = lambda z: np.maximum(z, 0)  # noqa: E731
    drelu = lambda z: (z > 0).astype(float)  # noqa: E731
    out = V.propagate_variance(relu, drelu, [2 / n] * depth, [n] * depth)
    assert V.spread(out["forward_variance"][1:]) == pytest.approx(1.0, abs=1e-3)
    assert V.spread(out["backward_variance"]) == pytest.approx(1.0, abs=1e-3)
    lin = V.propagate_variance(lambda z: z, np.ones_like, [1 / n] * depth, [n] * depth,
                               input_second_moment=3.0)
    np.testing.assert_allclose(lin["forward_variance"], 3.0, rtol=1e-9)
    np.testing.assert_allclose(lin["backward_variance"], 1.0, rtol=1e-9)


def test_propagate_variance_matches_a_float64_simulation():
    # Slow reference: a wide random tanh network in float64.
    rng = np.random.default_rng(0)
    n, depth, sw2 = 2000, 6, 1.5
    h = rng.standard_normal((200, n))
    measured = []
    for _ in range(depth):
        w = rng.standard_normal((n, n)) * math.sqrt(sw2 / n)
        z = h @ w
        measured.append(np.mean(z**2))
        h = np.tanh(z)
    pred = V.propagate_variance(np.tanh, lambda z: 1 - np.tanh(z) ** 2, [sw2 / n] * depth,
                                [n] * depth)["forward_variance"]
    np.testing.assert_allclose(pred, measured, rtol=0.05)


def test_propagate_variance_sigmoid_backward_decays():
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    dsig = lambda z: sig(z) * (1 - sig(z))  # noqa: E731
    n = 64
    out = V.propagate_variance(sig, dsig, [2 / (2 * n)] * 20, [n] * 20)
    g = out["backward_variance"]
    assert g[0] < 1e-6 * g[-1]
    assert np.all(np.diff(g) > 0)  # shrinks at every step towards the input


def test_spread_and_bad_input():
    assert V.spread([1.0, 2.0, 0.5]) == 4.0
    assert V.spread([1.0, 0.0]) == math.inf
    assert V.spread([1.0, float("nan")]) == math.inf
    with pytest.raises(ValueError, match="values"):
        V.spread([])
    with pytest.raises(ValueError, match="variance"):
        V.gaussian_expectation(np.square, 0.0)
    with pytest.raises(ValueError, match="fan_ins"):
        V.propagate_variance(np.tanh, np.tanh, [1.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="shape"):
        V.compute_fans((3, 0))

"""The per-timestep gradient probe against a hand-computed reference, and the time profile."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradhealth as gh
from gradhealth.adapters.probes import sequence_input_gradient, split_at
from gradhealth.core.timeprofile import decay_per_step, memory_horizon, time_profile


def linear_rnn(a: float, length: int) -> keras.Model:
    """h_t = a h_{t-1} + x_t, output = h_T: dL/dx_t is a^(T-1-t) dL/dh_T."""
    inputs = keras.Input((length, 1))
    h = keras.layers.SimpleRNN(1, activation="linear", use_bias=False, name="rnn")(inputs)
    out = keras.layers.Dense(1, use_bias=False, name="out")(h)
    model = keras.Model(inputs, out)
    model.get_layer("rnn").set_weights([np.ones((1, 1)), np.full((1, 1), a)])
    model.get_layer("out").set_weights([np.ones((1, 1))])
    return model


@pytest.mark.parametrize("a", [0.5, 0.9, 1.1])
def test_sequence_gradient_matches_hand_computed_reference(a):
    length, batch = 12, 5
    model = linear_rnn(a, length)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, length, 1)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")
    got = sequence_input_gradient(model, model.get_layer("rnn"), x, y,
                                  keras.losses.get("mse"))
    xd = x[:, :, 0].astype(np.float64)
    powers = a ** np.arange(length - 1, -1, -1, dtype=np.float64)
    h_last = xd @ powers
    # mean over the batch of (h_T - y)^2: dL/dh_T = 2 (h_T - y) / B
    expected = (2.0 * (h_last - y[:, 0]) / batch)[:, None] * powers[None, :]
    np.testing.assert_allclose(got[:, :, 0], expected, rtol=1e-4, atol=1e-7)


def test_checkup_reports_the_decay_rate_of_a_linear_recurrence():
    length, a = 30, 0.7
    model = linear_rnn(a, length)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, length, 1)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    report = gh.checkup(model, x, y, loss="mse")
    (prof,) = report.time_profiles.values()
    assert prof["decay_per_step"] == pytest.approx(a, rel=1e-3)
    assert prof["first_to_max"] == pytest.approx(a ** (length - 1), rel=1e-3)
    assert report.status == "vanishing"  # 0.7**29 = 3e-5 < 1e-3: ungated, vanishing in time


def test_a_model_that_cannot_be_split_is_reported_not_measured():
    class Wrapped(keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.rnn = keras.layers.SimpleRNN(4)

        def call(self, x):
            return self.rnn(x)

    inputs = keras.Input((6, 2))
    model = keras.Model(inputs, keras.layers.Dense(2)(Wrapped()(inputs)))
    x = np.zeros((4, 6, 2), "float32")
    report = gh.checkup(model, x, np.zeros(4, "int32"), loss="sparse_categorical_crossentropy")
    (prof,) = report.time_profiles.values()
    assert prof["measured"] is False and "not a top-level" in prof["why"]
    assert any("not measured" in f for f in report.findings)


def test_split_at_refuses_a_layer_with_a_skip_around_it():
    inputs = keras.Input((6, 2))
    h = keras.layers.Dense(2)(inputs)
    h = keras.layers.SimpleRNN(2, return_sequences=True, name="rnn")(h)
    out = keras.layers.Add()([h, inputs])  # the output depends on more than the RNN's input
    model = keras.Model(inputs, out)
    assert split_at(model, model.get_layer("rnn")) is None


@settings(max_examples=40, deadline=None)
@given(st.floats(0.05, 3.0), st.integers(3, 60), st.floats(1e-6, 1e3))
def test_decay_per_step_recovers_a_geometric_profile(rate, length, scale):
    profile = [scale * rate ** (length - 1 - t) for t in range(length)]
    assert decay_per_step(profile) == pytest.approx(rate, rel=1e-6)
    summary = time_profile(profile)
    assert summary["first_to_last"] == pytest.approx(rate ** (length - 1), rel=1e-6)
    reverse = time_profile(profile[::-1], reverse=True)
    assert reverse["decay_per_step"] == pytest.approx(rate, rel=1e-6)


def test_memory_horizon():
    assert memory_horizon(0.5, 1e-3) == pytest.approx(np.log(1e-3) / np.log(0.5))
    assert memory_horizon(1.0, 1e-3) == float("inf")
    assert memory_horizon(float("nan"), 1e-3) == float("inf")

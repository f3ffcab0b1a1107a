"""gradhealth under tf.distribute.MirroredStrategy on two logical CPU devices.

Every run is compared with a single-device run on the same global batch: the monitor's
statistics, the non-finite decision and clipping must be those of the applied (summed)
gradient. Run by ``make test-distributed`` (see conftest.py).
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from same_run import REL, assert_arrays_match, assert_histories_match

import gradhealth as gh
from gradhealth.optim import ClippingOptimizer

DEVICES = int(os.environ["GRADHEALTH_DEVICES"])

STRATEGY = tf.distribute.MirroredStrategy([f"CPU:{i}" for i in range(DEVICES)])
GLOBAL_BATCH = 32


def test_two_replicas_are_in_sync():
    assert DEVICES >= 2
    assert STRATEGY.num_replicas_in_sync == DEVICES


def data(n=64, nan_row=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype("float32")
    y = (10 * rng.normal(size=(n, 2))).astype("float32")
    if nan_row is not None:
        x[nan_row, 0] = np.nan
    return x, y


def build(optimizer_fn, distributed):
    def make():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                                  keras.layers.Dense(2)])
        model.compile(optimizer=optimizer_fn(), loss="mse")
        return model

    if distributed:
        with STRATEGY.scope():
            return make()
    return make()


def replica_values(variable):
    """Each replica's copy of a (mirrored) variable."""
    return [np.asarray(v) for v in STRATEGY.experimental_local_results(variable.value)]


def fit_monitored(distributed, policy, x, y, epochs=1):
    model = build(lambda: keras.optimizers.SGD(0.01), distributed)
    monitor = gh.GradientHealthMonitor(on_nonfinite=policy, stats="all")
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[monitor])
    return model, monitor


@pytest.mark.parametrize("policy", ["skip", "stop", "warn"])
def test_monitor_statistics_are_those_of_the_applied_gradient(policy):
    x, y = data()
    one, mon_one = fit_monitored(False, policy, x, y)
    two, mon_two = fit_monitored(True, policy, x, y)
    h1, h2 = mon_one.history, mon_two.history
    assert_histories_match(h2, h1)
    # An independent reference: the first step's global norm from a tape on the global batch.
    ref = build(lambda: keras.optimizers.SGD(0.01), False)
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y[:GLOBAL_BATCH], ref(x[:GLOBAL_BATCH]))
    grads = tape.gradient(loss, ref.trainable_variables)
    ref_norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in grads))
    assert h2.global_norm.iloc[0] == pytest.approx(ref_norm, rel=REL)
    assert_arrays_match(two.weights, one.weights)


def test_nonfinite_step_is_skipped_on_every_replica():
    # The NaN sits in the second replica's half of the first global batch only.
    x, y = data(nan_row=GLOBAL_BATCH - 1)
    model = build(lambda: keras.optimizers.Adam(0.01), True)
    before = [w.numpy() for w in model.trainable_weights]
    monitor = gh.GradientHealthMonitor(on_nonfinite="skip")
    model.fit(x[:GLOBAL_BATCH], y[:GLOBAL_BATCH], batch_size=GLOBAL_BATCH, epochs=1,
              shuffle=False, verbose=0, callbacks=[monitor])
    assert monitor.skipped_steps == [0]
    assert model.optimizer.iterations.numpy() == 0  # Adam never stepped on any replica
    for w, b in zip(model.trainable_weights, before, strict=True):
        for copy in replica_values(w):
            np.testing.assert_array_equal(copy, b)


def test_nonfinite_under_warn_is_applied_on_every_replica_alike():
    x, y = data(nan_row=GLOBAL_BATCH - 1)
    monitor = gh.GradientHealthMonitor(on_nonfinite="warn")
    model = build(lambda: keras.optimizers.SGD(0.01), True)
    with pytest.warns(gh.GradientHealthWarning):
        model.fit(x[:GLOBAL_BATCH], y[:GLOBAL_BATCH], batch_size=GLOBAL_BATCH, epochs=1,
                  shuffle=False, verbose=0, callbacks=[monitor])
    for w in model.trainable_weights:
        copies = replica_values(w)
        assert not np.isfinite(copies[0]).all()
        for c in copies[1:]:
            np.testing.assert_array_equal(np.isnan(c), np.isnan(copies[0]))


CLIP = [("value", {"clip_value": 0.05}), ("norm", {"max_norm": 0.1}),
        ("global_norm", {"max_norm": 0.1}), ("agc", {"clip_factor": 0.01}),
        ("autoclip", {"percentile": 50})]


@pytest.mark.parametrize(("method", "kwargs"), CLIP, ids=[m for m, _ in CLIP])
def test_clipping_acts_on_the_summed_gradient(method, kwargs):
    x, y = data()
    runs = {}
    for distributed in (False, True):
        model = build(lambda: ClippingOptimizer(keras.optimizers.SGD(1.0), method, **kwargs),
                      distributed)
        w0 = [w.numpy().astype(np.float64) for w in model.trainable_weights]
        model.fit(x[:GLOBAL_BATCH], y[:GLOBAL_BATCH], batch_size=GLOBAL_BATCH, epochs=1,
                  shuffle=False, verbose=0)
        runs[distributed] = [w0_i - w.numpy() for w0_i, w in zip(w0, model.trainable_weights,
                                                                  strict=True)]
    assert_arrays_match(runs[True], runs[False])
    if method == "global_norm":
        applied = np.sqrt(sum(np.sum(d ** 2) for d in runs[True]))  # SGD(1.0): step == grad
        assert applied <= kwargs["max_norm"] * (1 + 1e-6)
        assert applied == pytest.approx(kwargs["max_norm"], rel=1e-6)  # the gradient was larger


def test_clipping_with_embedding_indexed_slices_matches_one_device():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 20, size=(GLOBAL_BATCH, 3))
    y = rng.normal(size=(GLOBAL_BATCH, 1)).astype("float32")

    def make():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(20, 4),
                                  keras.layers.Flatten(), keras.layers.Dense(1)])
        model.compile(optimizer=ClippingOptimizer(keras.optimizers.SGD(1.0), "global_norm",
                                                  max_norm=0.01), loss="mse")
        return model

    one = make()
    with STRATEGY.scope():
        two = make()
    for model in (one, two):
        model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    assert_arrays_match(two.weights, one.weights)


def test_monitor_with_mixed_precision_matches_one_device():
    x, y = data()
    y = y / 10  # keep the float16 backward pass finite at this loss scale on both layouts
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        histories = []
        for distributed in (False, True):
            model = build(lambda: keras.optimizers.LossScaleOptimizer(
                keras.optimizers.SGD(0.01), initial_scale=2.0 ** 7), distributed)
            monitor = gh.GradientHealthMonitor()
            model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0,
                      callbacks=[monitor])
            histories.append(monitor.history)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(histories[0].global_norm).all()
    # float16 forward passes on half batches round differently: 1e-3, float16's resolution.
    np.testing.assert_allclose(histories[1].global_norm.to_numpy(),
                               histories[0].global_norm.to_numpy(), rtol=1e-3)


def test_a_second_monitored_fit_reuses_its_step_and_matches_one_device():
    """The monitored train function kept between fits (tests/test_monitor_refit.py) is a
    distributed function here: reused, it must still sum the replicas' gradients."""
    x, y = data()
    runs = {}
    for distributed in (False, True):
        model = build(lambda: keras.optimizers.SGD(0.01), distributed)
        seen, histories = [], []
        for _ in range(2):
            monitor = gh.GradientHealthMonitor(stats="all")
            model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0,
                      callbacks=[monitor])
            seen.append(model.__dict__["_gradhealth_fit_cache"].entries.copy())
            histories.append(monitor.history)
        runs[distributed] = (model, histories)
        (entry_1,), (entry_2,) = seen[0].values(), seen[1].values()
        assert entry_1[2] is entry_2[2]  # the same train function both times
    (one, h_one), (two, h_two) = runs[False], runs[True]
    for a, b in zip(h_one, h_two, strict=True):
        assert_histories_match(b, a, ("grad_norm", "global_norm", "weight_norm"))
    assert_arrays_match(two.weights, one.weights)

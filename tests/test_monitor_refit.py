"""Monitored fits of one model reuse their train function (no retrace), and stay correct.

Installing the monitor changes the train step, which TensorFlow traces and JAX compiles again;
the monitor keeps the monitored train function on the model and puts the user's own back after
each fit. A later fit may reuse them only when nothing they depend on changed.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest

from gradhealth.callbacks.monitor import FIT_CACHE_SIZE, GradientHealthMonitor

BATCH = 16


def make_model(seed=0, loss=None):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class SeenFunction(keras.callbacks.Callback):
    """The train function each fit runs (read once the fit has started)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.seen.append(self.model.train_function)


def fit(model, x, y, monitor=None, seen=None):
    callbacks = [c for c in (monitor, seen) if c is not None]
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
    return monitor.history if monitor is not None else None


def weights(model):
    return [keras.ops.convert_to_numpy(v.value) for v in model.trainable_variables]


def test_second_monitored_fit_reuses_the_train_function_and_logs_the_same(six_features):
    x, y = six_features
    model, seen = make_model(), SeenFunction()
    first = fit(model, x, y, GradientHealthMonitor(), seen)
    second = fit(model, x, y, GradientHealthMonitor(), seen)   # a new monitor, same settings
    assert seen.seen[0] is seen.seen[1]
    # The reference runs the same two fits, the second with a monitor that cannot reuse the
    # first one's function (another buffer size, same numbers).
    ref, ref_seen = make_model(), SeenFunction()
    ref_first = fit(ref, x, y, GradientHealthMonitor(), ref_seen)
    ref_second = fit(ref, x, y, GradientHealthMonitor(buffer_steps=16), ref_seen)
    assert ref_seen.seen[0] is not ref_seen.seen[1]
    assert sorted(second.step.unique()) == list(range(len(x) // BATCH))  # counted from 0
    for got, want in ((first, ref_first), (second, ref_second)):
        numbers = got.select_dtypes("number").columns   # layer names differ between models
        pd.testing.assert_frame_equal(got[numbers], want[numbers])
    for a, b in zip(weights(model), weights(ref), strict=True):
        np.testing.assert_array_equal(a, b)


def test_plain_fit_after_a_monitored_one_runs_the_users_function(six_features):
    x, y = six_features
    model, seen = make_model(), SeenFunction()
    fit(model, x, y, seen=seen)                    # the user's own function, traced
    fit(model, x, y, GradientHealthMonitor(), seen)
    fit(model, x, y, seen=seen)
    assert seen.seen[2] is seen.seen[0] and seen.seen[1] is not seen.seen[0]
    assert isinstance(model.optimizer, keras.optimizers.Adam)  # the user's, not the wrapper


def test_recompiling_with_another_loss_is_not_served_a_stale_step(six_features):
    x, y = six_features
    model, seen = make_model(), SeenFunction()
    fit(model, x, y, GradientHealthMonitor(), seen)
    hinge = keras.losses.CategoricalHinge()
    y_hot = np.eye(3, dtype="float32")[y]
    model.compile(optimizer=model.optimizer, loss=hinge)
    after = fit(model, x, y_hot, GradientHealthMonitor(), seen)
    assert seen.seen[1] is not seen.seen[0]
    # The same fit on a model built the same way and compiled with the hinge loss from the start.
    ref = make_model()
    fit(ref, x, y, GradientHealthMonitor(buffer_steps=16))
    ref.compile(optimizer=ref.optimizer, loss=hinge)
    ref_after = fit(ref, x, y_hot, GradientHealthMonitor(buffer_steps=16))
    np.testing.assert_allclose(after.loss.to_numpy(), ref_after.loss.to_numpy(), rtol=1e-6)


def test_a_new_optimizer_is_not_served_the_old_wrapper(six_features):
    x, y = six_features
    model, seen = make_model(), SeenFunction()
    fit(model, x, y, GradientHealthMonitor(), seen)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=model.loss)
    fit(model, x, y, GradientHealthMonitor(), seen)
    assert seen.seen[1] is not seen.seen[0]
    assert isinstance(model.optimizer, keras.optimizers.SGD)


def test_the_cache_holds_a_few_settings_only(six_features):
    x, y = six_features
    model = make_model()
    for every in range(1, FIT_CACHE_SIZE + 3):
        fit(model, x[:BATCH * 2], y[:BATCH * 2], GradientHealthMonitor(every=every))
    assert len(model.__dict__["_gradhealth_fit_cache"].entries) == FIT_CACHE_SIZE


def test_a_monitor_of_other_settings_gets_its_own_step(six_features):
    """JAX keeps traces by function: a wrapper that differs from the last one only in Python
    settings (same variables and shapes) must still run its own step, not the earlier trace.
    Here every=1 then every=2 (the device ring must hold the even steps only), then clipping
    switched on (the update must be the clipped one)."""
    x, y = six_features
    model = make_model()
    fit(model, x, y, GradientHealthMonitor(every=1))
    second = GradientHealthMonitor(every=2)
    ring = []

    class ReadRing(keras.callbacks.Callback):
        def on_train_end(self, logs=None):  # before the monitor puts the user's optimizer back
            ring.append(second._read(second._optimizer.ring_steps))

    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[ReadRing(), second])
    steps = len(x) // BATCH
    assert sorted(s for s in ring[0] if s >= 0) == list(range(0, steps, 2))

    # Clipping on: one step with SGD(1), so the update is exactly minus the clipped gradient.
    sgd = make_model()
    sgd.compile(optimizer=keras.optimizers.SGD(1.0), loss=sgd.loss)
    fit(sgd, x[:BATCH], y[:BATCH], GradientHealthMonitor(on_explosion="warn"))
    before = weights(sgd)
    fit(sgd, x[:BATCH], y[:BATCH], GradientHealthMonitor(on_explosion="clip", max_norm=1e-3))
    moved = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(weights(sgd), before,
                                                             strict=True)))
    assert moved == pytest.approx(1e-3, rel=1e-4)

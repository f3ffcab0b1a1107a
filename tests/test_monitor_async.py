"""The monitor lets ``fit`` dispatch the next step without waiting for the device.

Keras turns each step's logs into Python floats before ``on_train_batch_end``; for a callback
that is not ``async_safe`` it does so in the training loop, which makes every step wait for the
device. The monitor is async-safe unless a stop policy is set: its ``on_train_batch_end``
only records the step (it may run in Keras' worker threads, out of order), and the device ring
is read on the training thread. These tests check that Keras does dispatch it asynchronously
(on JAX and torch; TensorFlow's Keras never does) and that the history, skips and alerts are
those of a run that waits every step.
"""

from __future__ import annotations

import threading

import keras
import numpy as np
import pandas as pd
import pytest

from gradhealth.callbacks.monitor import GradientHealthMonitor, GradientHealthWarning

BATCH = 8
# Keras dispatches callbacks to worker threads only on the backends it marks thread-safe.
THREADED = keras.backend.backend() in ("jax", "torch")


def make_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class Waits(keras.callbacks.Callback):
    """A plain callback with a batch-end hook: Keras then calls every hook in the loop."""

    def on_train_batch_end(self, batch, logs=None):
        pass


def monitored_fit(x, y, waits, **settings):
    model, monitor, threads = make_model(), GradientHealthMonitor(**settings), []
    hook = monitor.on_train_batch_end

    def recorded(batch, logs=None):
        threads.append(threading.get_ident())
        hook(batch, logs)

    monitor.on_train_batch_end = recorded
    callbacks = [monitor, Waits()] if waits else [monitor]
    with pytest.warns(GradientHealthWarning) if settings.get("on_nonfinite") == "warn" else \
            _nothing():
        model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                  callbacks=callbacks)
    return monitor, threads, [keras.ops.convert_to_numpy(v.value)
                              for v in model.trainable_variables]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("settings", [dict(every=1), dict(every=3, buffer_steps=4),
                                      dict(every=2, on_nonfinite="warn")])
def test_async_run_logs_what_a_waiting_run_logs(six_features, settings):
    x, y = six_features
    x = x.copy()
    x[5 * BATCH + 1, 2] = np.nan  # step 5 of each epoch's 8
    fast, fast_threads, fast_w = monitored_fit(x, y, waits=False, **settings)
    slow, slow_threads, slow_w = monitored_fit(x, y, waits=True, **settings)
    main = threading.get_ident()
    assert set(slow_threads) == {main}
    if THREADED:
        assert main not in fast_threads  # Keras dispatched every call to its workers
    else:
        assert set(fast_threads) == {main}
    steps = 3 * len(x) // BATCH
    assert sorted(fast.history.step.unique()) == list(range(0, steps, settings["every"]))
    kept = [c for c in fast.history.columns if c not in ("layer", "variable", "path")]
    pd.testing.assert_frame_equal(fast.history[kept], slow.history[kept])  # names differ
    assert fast.skipped_steps == slow.skipped_steps
    assert [a.message for a in fast.alerts] == [a.message for a in slow.alerts]
    for a, b in zip(fast_w, slow_w, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("settings", "safe"), [
    (dict(), True), (dict(on_nonfinite="warn"), True), (dict(on_explosion="clip"), True),
    (dict(on_nonfinite="stop"), False), (dict(on_explosion="stop"), False)])
def test_stop_policies_wait_for_each_step(settings, safe):
    """Stopping right after a step needs its numbers before the next one starts."""
    assert GradientHealthMonitor(**settings).async_safe is safe

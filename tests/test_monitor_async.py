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
import time
import warnings

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


def test_hooks_lagging_in_worker_threads_lose_no_step(six_features):
    """Keras does not wait for its worker threads, so the training thread runs ahead of the
    recorded steps. Pulls are counted by the steps handed to the device and wait for the
    hooks, so a small ring is not overwritten under steps still unrecorded."""
    x, y = six_features
    model, monitor = make_model(), GradientHealthMonitor(every=1, buffer_steps=4)
    hook, main = monitor.on_train_batch_end, threading.get_ident()

    def slow(batch, logs=None):
        if threading.get_ident() != main:
            time.sleep(0.02)
        hook(batch, logs)

    monitor.on_train_batch_end = slow
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientHealthWarning)  # "overwritten ..." would raise
        model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                  callbacks=[monitor])
    reference, _, _ = monitored_fit(x, y, waits=True, every=1, buffer_steps=4)
    steps = 3 * len(x) // BATCH
    assert sorted(monitor.history.step.unique()) == list(range(steps))
    kept = [c for c in monitor.history.columns if c not in ("layer", "variable", "path")]
    pd.testing.assert_frame_equal(monitor.history[kept], reference.history[kept])


@pytest.mark.skipif(keras.backend.backend() == "torch",
                    reason="Keras' torch backend runs one step per call")
@pytest.mark.parametrize("every", [1, 2, 3])
def test_steps_per_execution_logs_every_logged_step(every):
    """Several steps per call of the train function (13 steps an epoch in blocks of 4, the
    last one short, a ring smaller than a block): every logged step is in the history with the
    numbers of a run of one step per call, and the epochs are numbered from the device."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(26, 6)).astype("float32")
    y = rng.integers(0, 3, size=26)
    histories = {}
    for spe in (1, 4):
        model = make_model()
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=model.loss,
                      steps_per_execution=spe)
        monitor = GradientHealthMonitor(every=every, buffer_steps=2)
        with warnings.catch_warnings():
            warnings.simplefilter("error", GradientHealthWarning)
            model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0,
                      callbacks=[monitor])
        histories[spe] = monitor.history
    one, blocks = histories[1], histories[4]
    assert sorted(blocks.step.unique()) == list(range(0, 26, every))
    numbers = ["step", "epoch", "batch", "grad_norm", "grad_max_abs", "weight_norm"]
    pd.testing.assert_frame_equal(blocks[numbers], one[numbers], rtol=1e-5)
    has_loss = blocks.groupby("step").loss.first().notna()
    # Keras reports each block by its last batch (the epoch's last block as 12-15, though
    # the data ran out after 12): steps with no report of their own have no loss.
    assert list(has_loss[has_loss].index) == [s for s in range(0, 26, every)
                                              if s % 13 % 4 == 3]

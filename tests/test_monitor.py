"""GradientHealthMonitor in model.fit (run once per backend) and called by hand."""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import pandas as pd
import pytest

from gradhealth.callbacks.monitor import (
    HISTORY_COLUMNS,
    GradientHealthMonitor,
    GradientHealthWarning,
)
from gradhealth.core.detect import ExplosionDetector
from gradhealth.core.stats import STAT_COLUMNS, tensor_stats
from gradhealth.diagnosis import gradient_stats
from gradhealth.optim import MonitoringOptimizer

BATCH = 16


@pytest.fixture(scope="module")
def data(six_features):
    return six_features


def make_model(optimizer=None, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
    model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def weights(model):
    return [keras.ops.convert_to_numpy(v.value) for v in model.trainable_variables]


def all_finite(model):
    return all(np.isfinite(w).all() for w in weights(model))


def poisoned(x, row):
    xp = x.copy()
    xp[row, 0] = np.inf
    return xp


COMPARED = [c for c in STAT_COLUMNS if c != "nonfinite_count"]


def assert_matches(history_step, reference):
    assert list(history_step["path"]) == list(reference["path"])
    for col in COMPARED:
        np.testing.assert_allclose(history_step[col].to_numpy(np.float64),
                                   reference[col].to_numpy(np.float64), rtol=1e-4, atol=1e-12,
                                   err_msg=col)
    assert list(history_step["nonfinite_count"]) == list(reference["nonfinite_count"])


def test_first_step_matches_gradient_stats(data):
    x, y = data
    model = make_model()
    reference = gradient_stats(model, x[:BATCH], y[:BATCH])
    monitor = GradientHealthMonitor(every=1, stats="all")
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[monitor])
    h = monitor.history
    assert list(h.columns) == list(HISTORY_COLUMNS)
    assert sorted(h.step.unique()) == list(range(8))  # 2 epochs x 4 batches, every step
    assert set(h.epoch) == {0, 1} and h.loss.notna().all()
    assert_matches(h[h.step == 0].reset_index(drop=True), reference)
    assert (h.status == "ok").all() and monitor.alerts == []
    # the global norm combines the variables' norms
    first = h[h.step == 0]
    assert first.global_norm.iloc[0] == pytest.approx(
        math.sqrt(float(np.sum(first.grad_norm.to_numpy(np.float64) ** 2))), rel=1e-9)
    # the model gets its own optimizer back after fit
    assert isinstance(model.optimizer, keras.optimizers.Adam)


def test_every_logs_only_some_steps_and_monitor_is_reusable(data, tmp_path):
    x, y = data
    model = make_model()
    csv = tmp_path / "grads.csv"
    monitor = GradientHealthMonitor(every=3, csv=csv, stats="all")
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[monitor])
    assert sorted(monitor.history.step.unique()) == [0, 3, 6]
    logged = pd.read_csv(csv)
    assert list(logged.columns) == list(HISTORY_COLUMNS)
    np.testing.assert_allclose(logged.grad_norm, monitor.history.grad_norm, rtol=1e-12)
    # second fit: state reset, statistics start again at step 0 with the current weights
    reference = gradient_stats(model, x[:BATCH], y[:BATCH])
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
    assert sorted(monitor.history.step.unique()) == [0, 3]
    assert_matches(monitor.history[monitor.history.step == 0].reset_index(drop=True), reference)
    assert len(pd.read_csv(csv)) == len(monitor.history)


def test_poisoned_batch_is_skipped_and_training_continues(data):
    x, y = data
    model = make_model()
    monitor = GradientHealthMonitor(every=1, on_nonfinite="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientHealthWarning)  # "skip" records, no warning
        model.fit(poisoned(x, 20), y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                  callbacks=[monitor])
    assert all_finite(model)
    assert monitor.skipped_steps == [1]
    assert [(a.step, a.kind) for a in monitor.alerts] == [(1, "nonfinite")]
    h = monitor.history
    assert sorted(h.step.unique()) == [0, 1, 2, 3]  # training went on after the bad step
    assert (h[h.step == 1].status == "nonfinite").any() and h[h.step == 1].skipped.all()
    assert (h[h.step == 2].status == "ok").all()


def test_skipped_step_leaves_weights_unchanged(data):
    x, y = data
    model = make_model(keras.optimizers.SGD(0.1))
    before = weights(model)
    model.fit(poisoned(x, 0)[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0,
              callbacks=[GradientHealthMonitor()])
    for b, a in zip(before, weights(model), strict=True):
        np.testing.assert_array_equal(b, a)


def test_stop_stops_at_the_poisoned_step(data):
    x, y = data
    model = make_model()
    monitor = GradientHealthMonitor(every=1, on_nonfinite="stop")
    with pytest.warns(GradientHealthWarning, match="step 2: non-finite"):
        model.fit(poisoned(x, 40), y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                  callbacks=[monitor])
    assert monitor.stopped_at == 2
    assert monitor.history.step.max() == 2
    assert all_finite(model)


def test_stop_is_caught_between_logged_steps(data):
    x, y = data
    model = make_model()
    monitor = GradientHealthMonitor(every=100, on_nonfinite="stop")
    with pytest.warns(GradientHealthWarning):
        model.fit(poisoned(x, 40), y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                  callbacks=[monitor])
    assert monitor.stopped_at == 2 and sorted(monitor.history.step.unique()) == [0]


def test_skip_between_logged_steps_keeps_the_weights_finite(data):
    """Steps that log nothing check "any non-finite entry" alone; a poisoned one is skipped."""
    x, y = data
    model = make_model()
    monitor = GradientHealthMonitor(every=100, on_nonfinite="skip")
    model.fit(poisoned(x, 40), y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[monitor])
    assert all_finite(model)
    assert monitor.skipped_steps == [2]
    assert sorted(monitor.history.step.unique()) == [0]


def test_warn_applies_the_update_and_warns(data):
    x, y = data
    model = make_model()
    monitor = GradientHealthMonitor(on_nonfinite="warn")
    with pytest.warns(GradientHealthWarning, match="APPLIED"):
        model.fit(poisoned(x, 0)[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0,
                  callbacks=[monitor])
    assert not all_finite(model) and monitor.skipped_steps == []


def test_explosion_warn_stop_and_clip(data):
    x, y = data
    # max_norm far below this model's gradient norms: every detector path is exercised.
    monitor = GradientHealthMonitor(on_explosion="stop", max_norm=1e-6)
    model = make_model()
    with pytest.warns(GradientHealthWarning, match="exceeds"):
        model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[monitor])
    assert monitor.stopped_at == 0 and monitor.history.step.max() == 0
    assert {a.kind for a in monitor.alerts} == {"threshold"}
    assert (monitor.history.status == "exploding").all()

    model = make_model(keras.optimizers.SGD(1.0))
    before = weights(model)
    clip = GradientHealthMonitor(on_explosion="clip", max_norm=1e-3)
    with pytest.warns(GradientHealthWarning):
        model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0, callbacks=[clip])
    step = math.sqrt(sum(float(np.sum((b - a).astype(np.float64) ** 2))
                         for b, a in zip(before, weights(model), strict=True)))
    assert step == pytest.approx(1e-3, rel=1e-3)  # SGD(lr=1): the update is the clipped grad
    assert clip.history.global_norm.iloc[0] > 1e-3  # the history keeps the pre-clip norms


def test_custom_detector_growth_alert(data):
    x, y = data
    det = ExplosionDetector(max_norm=1e9, growth_factor=1.0001, growth_window=1, min_norm=1e-9)
    monitor = GradientHealthMonitor(detector=det)
    model = make_model(keras.optimizers.SGD(0.0))  # weights frozen: identical batches ->
    xs = np.concatenate([x[:BATCH], 10 * x[:BATCH]])  # the second batch has larger gradients
    ys = np.concatenate([y[:BATCH], y[:BATCH]])
    with pytest.warns(GradientHealthWarning, match="grew"):
        model.fit(xs, ys, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                  callbacks=[monitor])
    assert any(a.kind == "growth" and a.step == 1 for a in monitor.alerts)


def test_unused_and_frozen_variables(data):
    x, y = data
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    frozen = keras.layers.Dense(8, activation="relu", name="frozen")
    frozen.trainable = False
    hidden = frozen(inputs)
    unused = keras.layers.Dense(4, name="unused")(hidden)  # an output nobody trains
    out = keras.layers.Dense(3, name="out")(hidden)
    model = keras.Model(inputs, [out, unused])
    model.compile(optimizer="sgd",
                  loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), None])
    monitor = GradientHealthMonitor()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[monitor])
    h = monitor.history
    assert "frozen" not in set(h.layer)
    rows = h[(h.layer == "unused") & (h.step == 0)]
    assert len(rows) == 2 and (rows.grad_norm == 0).all()
    if keras.backend.backend() != "jax":  # JAX differentiates to zeros, not None
        assert not rows.connected.any()
    assert all_finite(model)


def test_loss_scale_optimizer_statistics_are_unscaled(data):
    x, y = data
    model = make_model(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01),
                                                           initial_scale=1024.0))
    reference = gradient_stats(model, x[:BATCH], y[:BATCH])
    monitor = GradientHealthMonitor(stats="all")
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0, callbacks=[monitor])
    assert_matches(monitor.history, reference)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_hooks_called_by_hand(data):
    """The callback's methods work without fit: apply gradients through the wrapper."""
    x, y = data
    model = make_model(keras.optimizers.SGD(0.0))
    monitor = GradientHealthMonitor(every=1, stats="all")
    monitor.set_model(model)
    wrapper = model.optimizer
    assert isinstance(wrapper, MonitoringOptimizer)
    monitor.on_train_begin()
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=v.shape).astype(np.float32) for v in model.trainable_variables]
    grads[0][0, 0] = 1e-30  # tiny entries must not underflow in the device statistics
    wrapper.apply([keras.ops.convert_to_tensor(g) for g in grads], model.trainable_variables)
    monitor.on_epoch_begin(0)
    monitor.on_train_batch_end(0, {"loss": 1.5})
    h = monitor.history
    for (_, row), g, w in zip(h.iterrows(), grads, weights(model), strict=True):
        expected = tensor_stats(g, w)
        for col in COMPARED:
            assert row[col] == pytest.approx(expected[col], rel=1e-5, nan_ok=True), col
    assert h.loss.iloc[0] == 1.5
    monitor.on_train_end()
    assert not isinstance(model.optimizer, MonitoringOptimizer)


def test_plot_and_alerts_frame(data):
    x, y = data
    model = make_model()
    monitor = GradientHealthMonitor(max_norm=1e-6)
    with pytest.warns(GradientHealthWarning):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[monitor])
    fig = monitor.plot()
    assert len(fig.axes) == 3  # norms, heat map, colour bar
    frame = monitor.alerts_frame
    assert list(frame.columns)[:3] == ["step", "kind", "layer"] and len(frame) >= 1


def test_tensorboard_scalars_are_written(data, tmp_path):
    import tensorflow as tf

    x, y = data
    model = make_model()
    monitor = GradientHealthMonitor(every=2, log_dir=tmp_path / "tb")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[monitor])
    files = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert files
    tags = {(v.tag, e.step) for f in files for e in tf.compat.v1.train.summary_iterator(str(f))
            for v in e.summary.value}
    assert ("gradients/global_norm", 0) in tags and ("gradients/global_norm", 2) in tags
    assert any(t.startswith("grad_norm/") for t, _ in tags)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"every": 0}, ValueError, "every=0"),
    ({"every": 1.5}, ValueError, "every=1.5"),
    ({"on_nonfinite": "ignore"}, ValueError, "on_nonfinite='ignore'"),
    ({"on_explosion": "panic"}, ValueError, "on_explosion='panic'"),
    ({"max_norm": -1}, ValueError, "max_norm=-1"),
    ({"detector": "fast"}, TypeError, "detector='fast'"),
    ({"csv": 3}, TypeError, "csv=3"),
    ({"stats": "most"}, ValueError, "stats='most'"),
    ({"stats": ["grad_norm", "grad_kurtosis"]}, ValueError, "grad_kurtosis"),
    ({"stats": 3}, TypeError, "stats=3"),
])
def test_invalid_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        GradientHealthMonitor(**kwargs)


def test_uncompiled_model_and_string_optimizer_are_clear_errors():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="compiled model"):
        GradientHealthMonitor().set_model(model)
    model.compile(optimizer="adam", loss="mse")
    model.optimizer = "adam"
    with pytest.raises(TypeError, match="optimizer='adam'"):
        GradientHealthMonitor().set_model(model)
    with pytest.raises(ValueError, match="set_model"):
        GradientHealthMonitor().on_train_begin()


def test_model_built_during_fit_and_optimizer_config(data):
    x, _ = data
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(4), keras.layers.Dense(1)])  # no Input: unbuilt
    model.compile(optimizer="adam", loss="mse")
    monitor = GradientHealthMonitor(every=2)
    model.fit(x[:32], x[:32, :1], batch_size=BATCH, epochs=2, verbose=0, callbacks=[monitor])
    assert sorted(monitor.history.step.unique()) == [0, 2]
    assert len(monitor.history) == 2 * 4  # two logged steps x four variables
    wrapper = monitor.wrap(keras.optimizers.SGD(0.1))
    clone = MonitoringOptimizer.from_config(wrapper.get_config())
    assert (clone.every, clone.skip_nonfinite, clone.clip_norm) == (2, True, None)
    assert isinstance(clone.inner_optimizer, keras.optimizers.SGD)


def test_stats_names_choose_the_columns_and_keep_the_guard(data):
    """A list of names computes those, plus the norm and non-finite count the detectors and
    the guard need."""
    x, y = data
    model = make_model()
    monitor = GradientHealthMonitor(stats=["zero_fraction"])
    assert monitor.stats == ("grad_norm", "zero_fraction", "nonfinite_count")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[monitor])
    h = monitor.history
    assert h.zero_fraction.notna().all() and (h.nonfinite_count == 0).all()
    assert h.grad_norm.notna().all() and h.global_norm.notna().all()
    assert h.weight_norm.isna().all() and h.grad_to_weight.isna().all()

"""The monitor's device ring buffer and its statistics, against the float64 reference.

Gradients are applied by hand through the wrapper (no fit), so each step's gradients are known
exactly; every statistic is compared with :func:`gradhealth.core.stats.tensor_stats`.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradhealth.adapters.fused import stats_kernels
from gradhealth.callbacks.monitor import GradientHealthMonitor, GradientHealthWarning
from gradhealth.core.stats import STAT_COLUMNS, tensor_stats
from gradhealth.ops import stats as ops_stats
from gradhealth.ops.stats import (
    CORE_STATS,
    DEVICE_STATS,
    device_stats,
    grad_histograms,
    grad_scan,
)

COMPARED = [c for c in STAT_COLUMNS if c not in ("nonfinite_count", "grad_to_weight")]


def make_model(bias_init="zeros"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)),
                              keras.layers.Dense(7, activation="relu", bias_initializer="ones"),
                              keras.layers.Dense(3, bias_initializer=bias_init)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return model


def values(model):
    return [keras.ops.convert_to_numpy(v.value) for v in model.trainable_variables]


def run_steps(monitor, model, grads_per_step):
    monitor.set_model(model)
    wrapper = model.optimizer
    monitor.on_train_begin()
    monitor.on_epoch_begin(0)
    for i, grads in enumerate(grads_per_step):
        wrapper.apply([keras.ops.convert_to_tensor(g) for g in grads], model.trainable_variables)
        monitor.on_train_batch_end(i, {"loss": float(i)})
    history = monitor.history
    monitor.on_train_end()
    return history


def scaled_gradients(model, rng, exponent, kind):
    out = []
    for v in model.trainable_variables:
        g = rng.normal(size=v.shape)
        if kind == "offset":  # entries far from zero: the variance must not cancel
            g = 3.0 + 1e-3 * g
        elif kind == "sparse":
            g[rng.random(size=v.shape) < 0.5] = 0.0
        out.append((g * 10.0 ** exponent).astype(np.float32))
    return out


def reference(g, w):
    """Every statistic in plain float64 NumPy (exact for float32 inputs of any magnitude:
    squares of 1e+-38 stay far inside float64's range)."""
    g64, w64 = np.asarray(g, np.float64), np.asarray(w, np.float64)
    finite = np.isfinite(g64)
    f = g64[finite]
    units = g64.reshape(-1, g64.shape[-1]) if g64.ndim >= 2 else g64.reshape(1, -1)
    return {"grad_norm": np.sqrt(np.sum(f * f)) if f.size else np.nan,
            "grad_mean_abs": np.mean(np.abs(f)) if f.size else np.nan,
            "grad_max_abs": np.max(np.abs(f)) if f.size else np.nan,
            "grad_std": np.std(f) if f.size else np.nan,
            "zero_fraction": np.mean(g64 == 0),
            "nonfinite_count": int(np.sum(~finite)),
            "weight_norm": np.sqrt(np.sum(w64 * w64)),
            "dead_unit_fraction": float(np.mean(np.all(units == 0, axis=0)))}


def assert_step_matches(rows, grads, weights):
    for (_, row), g, w in zip(rows.iterrows(), grads, weights, strict=True):
        expected = reference(g, w)
        # the library's own float64 reference agrees too (to its float32 scaling)
        assert row["grad_norm"] == pytest.approx(tensor_stats(g, w)["grad_norm"], rel=1e-5,
                                                 nan_ok=True)
        for col in COMPARED:
            assert row[col] == pytest.approx(expected[col], rel=1e-5, abs=0.0, nan_ok=True), (
                col, row["path"])
        assert row["nonfinite_count"] == expected["nonfinite_count"]


@pytest.mark.parametrize("kind", ["normal", "offset", "sparse"])
def test_statistics_exact_from_1e_minus30_to_1e30(kind):
    model = make_model()
    rng = np.random.default_rng(1)
    exponents = [-30, -20, -10, 0, 10, 20, 30]
    steps = [scaled_gradients(model, rng, e, kind) for e in exponents]
    # wraps around twice
    monitor = GradientHealthMonitor(every=1, buffer_steps=3, stats="all")
    history = run_steps(monitor, model, steps)
    assert sorted(history.step.unique()) == list(range(len(exponents)))
    for i, grads in enumerate(steps):
        assert_step_matches(history[history.step == i], grads, values(model))


def test_core_statistics_by_default_and_the_rest_nan():
    """The default logs CORE_STATS (exact, the ratio too) and leaves the other columns NaN."""
    model = make_model(bias_init="ones")
    rng = np.random.default_rng(5)
    steps = [scaled_gradients(model, rng, e, "normal") for e in (-20, 0, 20)]
    history = run_steps(GradientHealthMonitor(every=1), model, steps)
    for i, grads in enumerate(steps):
        rows = history[history.step == i]
        for (_, row), g, w in zip(rows.iterrows(), grads, values(model), strict=True):
            expected = reference(g, w)
            for col in CORE_STATS:
                assert row[col] == pytest.approx(expected[col], rel=1e-5), col
            assert row["grad_to_weight"] == pytest.approx(
                expected["grad_norm"] / expected["weight_norm"], rel=1e-5)
    assert history[[c for c in DEVICE_STATS if c not in CORE_STATS]].isna().all().all()


def test_nonfinite_entries_are_counted_and_left_out():
    model = make_model()
    rng = np.random.default_rng(2)
    grads = scaled_gradients(model, rng, 0, "normal")
    grads[0][0, 0], grads[0][1, 2], grads[1][3] = np.nan, np.inf, -np.inf
    grads[3][:] = np.nan  # a variable with no finite entry at all
    monitor = GradientHealthMonitor(every=1, on_nonfinite="skip", stats="all")
    history = run_steps(monitor, model, [grads])
    assert_step_matches(history, grads, values(model))
    assert history.skipped.all() and np.isnan(history.global_norm.iloc[0])
    assert monitor.skipped_steps == [0]


def test_device_stats_matches_reference_with_zero_weights_and_scalars():
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=(4, 3)).astype("float32"), np.zeros(3, "float32"),
             np.float32(2.5) * np.ones((), "float32"), rng.normal(size=(2, 2, 3)).astype(
                 "float32") * 1e-25]
    weights = [np.zeros_like(g) for g in grads]
    got = keras.ops.convert_to_numpy(device_stats(
        [keras.ops.convert_to_tensor(g) for g in grads],
        [keras.ops.convert_to_tensor(w) for w in weights]))
    for row, g, w in zip(got, grads, weights, strict=True):
        expected = tensor_stats(g, w)
        for j, name in enumerate(DEVICE_STATS):
            assert row[j] == pytest.approx(expected[name], rel=1e-5, abs=1e-45), name


def test_pulls_every_buffer_steps_and_on_history():
    """Steps stay on the device until buffer_steps of them are pending (or history is read)."""
    model = make_model()
    rng = np.random.default_rng(4)
    monitor = GradientHealthMonitor(every=2, buffer_steps=3, pull_seconds=1e9)
    monitor.set_model(model)
    wrapper = model.optimizer
    monitor.on_train_begin()
    pulled = []
    for i in range(12):
        grads = scaled_gradients(model, rng, 0, "normal")
        wrapper.apply([keras.ops.convert_to_tensor(g) for g in grads], model.trainable_variables)
        monitor.on_train_batch_end(i, {"loss": 0.0})
        pulled.append(sum(len(b["steps"]) for b in monitor._blocks))
    # logged steps 0, 2, 4, ...: the third one (step 4) fills the buffer, then step 10
    assert pulled == [0, 0, 0, 0, 3, 3, 3, 3, 3, 3, 6, 6]
    assert sorted(monitor.history.step.unique()) == [0, 2, 4, 6, 8, 10]
    monitor.on_train_end()


def test_logged_steps_see_the_weights_of_their_step():
    """At every=3 each logged row holds the weights of its own step while SGD moves them
    every step. On torch the steps in between do not read the weights at all
    (``reads_weights``); a logged step that skipped them would have no weight norm, and one
    that read them late would hold another step's."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(7),
                              keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    monitor = GradientHealthMonitor(every=3)
    monitor.set_model(model)
    wrapper = model.optimizer
    monitor.on_train_begin()
    monitor.on_epoch_begin(0)
    rng = np.random.default_rng(8)
    before, reads = {}, []
    for i in range(7):
        before[i] = values(model)
        grads = [rng.normal(size=v.shape).astype("float32") for v in model.trainable_variables]
        reads.append(wrapper.reads_weights())
        wrapper.apply([keras.ops.convert_to_tensor(g) for g in grads], model.trainable_variables)
        monitor.on_train_batch_end(i, {"loss": 0.0})
    history = monitor.history
    monitor.on_train_end()
    compiled = keras.backend.backend() != "torch"
    assert reads == [compiled or i % 3 == 0 for i in range(7)]
    assert sorted(history.step.unique()) == [0, 3, 6]
    for step in (0, 3, 6):
        rows = history[history.step == step]
        expected = [np.linalg.norm(w.astype("float64")) for w in before[step]]
        assert rows.weight_norm.to_numpy() == pytest.approx(expected, rel=1e-5)
    assert not np.allclose(before[0][0], before[3][0])  # the weights did move


def test_overwritten_steps_are_reported_not_invented():
    model = make_model()
    monitor = GradientHealthMonitor(every=1, buffer_steps=2, pull_seconds=1e9)
    monitor.set_model(model)
    wrapper = model.optimizer
    monitor.on_train_begin()
    grads = [np.ones(v.shape, "float32") for v in model.trainable_variables]
    for _ in range(3):  # three steps applied while the callback is not told: slots reused
        wrapper.apply([keras.ops.convert_to_tensor(g) for g in grads], model.trainable_variables)
    monitor._pending = [(0, 0, 0, 0.0), (1, 0, 1, 0.0), (2, 0, 2, 0.0)]
    with pytest.warns(GradientHealthWarning, match="overwritten"):
        history = monitor.history
    assert sorted(history.step.unique()) == [1, 2]
    monitor.on_train_end()


@pytest.mark.parametrize("kwargs, message", [
    ({"buffer_steps": 0}, "buffer_steps=0"),
    ({"pull_seconds": -1.0}, "pull_seconds=-1"),
])
def test_invalid_ring_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradientHealthMonitor(**kwargs)


_SHAPES = [(), (3,), (4, 3), (2, 2, 3), (5,)]


@settings(max_examples=15, deadline=None)  # each new shape set compiles anew on JAX
@given(st.lists(st.tuples(st.sampled_from(_SHAPES), st.integers(-30, 30), st.booleans(),
                          st.integers(0, 2**31 - 1)), min_size=1, max_size=9))
def test_grouped_passes_match_reference_in_variable_order(specs):
    """Variables of one shape are reduced together; rows must still come back in order.

    Shapes repeat and interleave (the regrouping is exercised), scales differ per variable
    (the scale is per variable, not per group), and some entries are non-finite.
    """
    grads, weights = [], []
    for shape, exponent, poison, seed in specs:
        rng = np.random.default_rng(seed)
        g = (rng.normal(size=shape) * 10.0 ** exponent).astype("float32")
        if poison and g.size > 1:
            g.reshape(-1)[0] = np.nan
        grads.append(np.asarray(g, "float32"))
        weights.append(rng.normal(size=shape).astype("float32"))
    tensors = [keras.ops.convert_to_tensor(g) for g in grads]
    wtensors = [keras.ops.convert_to_tensor(w) for w in weights]
    kernels = stats_kernels(ops_stats)
    got = keras.ops.convert_to_numpy(device_stats(tensors, wtensors))
    fused = keras.ops.convert_to_numpy(device_stats(tensors, wtensors, kernels=kernels))
    # The one-pass direct statistics, where they call themselves valid, agree too; they must
    # be valid for every gradient well inside float32's range (else the fast path is unused).
    direct, ok = (keras.ops.convert_to_numpy(t) for t in kernels.direct_stats(
        tensors, wtensors, DEVICE_STATS))
    for (shape, exponent, poison, _), valid in zip(specs, ok, strict=True):
        if abs(exponent) <= 10 and not (poison and len(shape) and np.prod(shape) > 1):
            assert valid, (shape, exponent)
    assert got.shape == fused.shape == (len(grads), len(DEVICE_STATS))
    for row, fast, dir_row, valid, g, w in zip(got, fused, direct, ok, grads, weights,
                                               strict=True):
        expected = reference(g.reshape(g.shape or (1,)), w)
        if g.ndim == 0:
            expected["dead_unit_fraction"] = 0.0  # a scalar has no units
        for j, name in enumerate(DEVICE_STATS):
            for r in (row, fast) + ((dir_row,) if valid else ()):
                assert r[j] == pytest.approx(expected[name], rel=1e-5, abs=1e-45,
                                             nan_ok=True), (name, g.shape)
    buckets = 6
    counts = keras.ops.convert_to_numpy(grad_histograms(tensors, grad_scan(tensors), buckets))
    for row, g in zip(counts, grads, strict=True):
        f = np.asarray(g, np.float64).reshape(-1)
        f = f[np.isfinite(f)]
        m = np.max(np.abs(f)) if f.size else 0.0
        edges = np.linspace(-m, m, buckets + 1) if m > 0 else np.linspace(-1, 1, buckets + 1)
        expected = np.histogram(f, bins=edges)[0]
        # float32 rounding may move an entry lying on an edge into the next bucket
        assert row.sum() == f.size and np.abs(row - expected).sum() <= 2 * (f.size > 0), (
            row, expected)


@pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                    reason="Keras' TensorFlow optimizers have no stateless_apply")
def test_stateless_apply_leaves_its_inputs_and_returns_the_logged_row():
    """``stateless_apply`` must not write into the values it is handed (torch writes the ring
    in place in ``apply``; here it must not), and the row it logs comes back in its outputs."""
    from gradhealth.optim.monitoring import C_STEPS, MonitoringOptimizer

    model = make_model()
    opt = MonitoringOptimizer(keras.optimizers.SGD(0.1), every=1, buffer_steps=2)
    opt.build(model.trainable_variables)
    own = len(opt.variables) - len(opt.inner_optimizer.variables)
    before = [keras.ops.convert_to_numpy(v.value).copy() for v in opt.variables]
    handed = [keras.ops.convert_to_tensor(b.copy()) for b in before]
    grads = scaled_gradients(model, np.random.default_rng(3), 0, "normal")
    weights = [keras.ops.convert_to_tensor(w) for w in values(model)]
    new_weights, new_vars = opt.stateless_apply(
        handed, [keras.ops.convert_to_tensor(g) for g in grads], weights)
    for b, h, v in zip(before, handed, opt.variables, strict=True):
        assert np.array_equal(keras.ops.convert_to_numpy(h), b)  # inputs untouched
        assert np.array_equal(keras.ops.convert_to_numpy(v.value), b)  # variables too
    out = {v.path: keras.ops.convert_to_numpy(n) for v, n in zip(opt.variables[:own],
                                                                 new_vars[:own], strict=True)}
    ring = out[opt.ring.path]
    assert keras.ops.convert_to_numpy(out[opt.ring_steps.path]).tolist() == [0, -1]
    assert out[opt.counters.path][C_STEPS] == 1
    for i, (g, w) in enumerate(zip(grads, values(model), strict=True)):
        assert ring[0, i, DEVICE_STATS.index("grad_norm")] == pytest.approx(
            reference(g, w)["grad_norm"], rel=1e-5)
    assert np.allclose(keras.ops.convert_to_numpy(new_weights[0]),
                       values(model)[0] - 0.1 * grads[0])

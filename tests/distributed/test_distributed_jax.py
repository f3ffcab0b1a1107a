"""gradhealth under JAX keras.distribution (DataParallel, ModelParallel) on two host devices.

XLA sums the per-device gradients inside the jitted train step, so the wrapper sees global
gradients; these tests hold that to a single-device run on the same global batch. Run by
``make test-distributed`` with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``.
"""

from __future__ import annotations

import os

import jax
import keras
import numpy as np
import pytest
from same_run import REL, assert_arrays_match, assert_histories_match

import gradhealth as gh
from gradhealth.optim import ClippingOptimizer

DEVICES = int(os.environ["GRADHEALTH_DEVICES"])
GLOBAL_BATCH = 32


def test_the_host_has_the_simulated_devices():
    assert len(jax.devices()) == DEVICES >= 2


def data(n=64, nan_row=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype("float32")
    y = (10 * rng.normal(size=(n, 2))).astype("float32")
    if nan_row is not None:
        x[nan_row, 0] = np.nan
    return x, y


def data_parallel():
    return keras.distribution.DataParallel(devices=jax.devices())


def model_parallel():
    mesh = keras.distribution.DeviceMesh((1, DEVICES), ["batch", "model"], devices=jax.devices())
    layout = keras.distribution.LayoutMap(mesh)
    layout["hidden/kernel"] = (None, "model")  # the hidden kernel split across devices
    layout["hidden/bias"] = ("model",)
    return keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch")


def build(optimizer_fn, distribution):
    def make():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)),
                                  keras.layers.Dense(8, activation="tanh", name="hidden"),
                                  keras.layers.Dense(2, name="out")])
        model.compile(optimizer=optimizer_fn(), loss="mse")
        return model

    if distribution is None:
        return make()
    with distribution.scope():
        return make()


def fit(model, distribution, x, y, callbacks=()):
    if distribution is None:
        model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0,
                  callbacks=list(callbacks))
        return
    with distribution.scope():
        model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0,
                  callbacks=list(callbacks))


LAYOUTS = {"data_parallel": data_parallel, "model_parallel": model_parallel}


# Every policy on DataParallel; ModelParallel (same wrapper path, sharded variables) with the
# default policy, to keep this file's compile time down.
POLICIES = [("data_parallel", "skip"), ("data_parallel", "stop"), ("data_parallel", "warn"),
            ("model_parallel", "skip")]


@pytest.mark.parametrize(("layout", "policy"), POLICIES)
def test_monitor_statistics_match_one_device(layout, policy):
    x, y = data()
    histories, weights = [], []
    for distribution in (None, LAYOUTS[layout]()):
        model = build(lambda: keras.optimizers.SGD(0.01), distribution)
        monitor = gh.GradientHealthMonitor(on_nonfinite=policy, stats="all")
        fit(model, distribution, x, y, [monitor])
        histories.append(monitor.history)
        weights.append([np.asarray(w) for w in model.weights])
    if layout == "model_parallel":  # the layout really split the hidden kernel
        kernel = model.get_layer("hidden").kernel.value
        assert len(kernel.sharding.device_set) == DEVICES
    h1, h2 = histories
    assert_histories_match(h2, h1)
    ref = build(lambda: keras.optimizers.SGD(0.01), None)
    grads = jax.grad(lambda ws: keras.losses.MeanSquaredError()(
        y[:GLOBAL_BATCH], ref.stateless_call(ws, [], x[:GLOBAL_BATCH])[0]))(
        [v.value for v in ref.trainable_variables])
    ref_norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in grads))
    assert h2.global_norm.iloc[0] == pytest.approx(ref_norm, rel=REL)
    assert_arrays_match(weights[1], weights[0])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_nonfinite_step_is_skipped_everywhere(layout):
    x, y = data(nan_row=GLOBAL_BATCH - 1)  # in the second device's half of the batch
    distribution = LAYOUTS[layout]()
    model = build(lambda: keras.optimizers.Adam(0.01), distribution)
    before = [np.asarray(w) for w in model.trainable_weights]
    monitor = gh.GradientHealthMonitor(on_nonfinite="skip")
    fit(model, distribution, x[:GLOBAL_BATCH], y[:GLOBAL_BATCH], [monitor])
    assert monitor.skipped_steps == [0]
    assert int(model.optimizer.iterations) == 0
    for w, b in zip(model.trainable_weights, before, strict=True):
        for shard in w.value.addressable_shards:  # every device's piece unchanged
            np.testing.assert_array_equal(np.asarray(shard.data), b[shard.index])


CLIP = [("value", {"clip_value": 0.05}), ("norm", {"max_norm": 0.1}),
        ("global_norm", {"max_norm": 0.1}), ("agc", {"clip_factor": 0.01}),
        ("autoclip", {"percentile": 50})]


# Every method on DataParallel; on ModelParallel the ones whose maths spans a sharded tensor
# (a global norm, per-unit norms of a split kernel).
CLIP_CASES = [pytest.param("data_parallel", m, kw, id=f"data_parallel-{m}") for m, kw in CLIP] + [
    pytest.param("model_parallel", m, kw, id=f"model_parallel-{m}") for m, kw in CLIP
    if m in ("global_norm", "agc")]


@pytest.mark.parametrize(("layout", "method", "kwargs"), CLIP_CASES)
def test_clipping_matches_one_device(layout, method, kwargs):
    x, y = data()
    steps = {}
    for distribution in (None, LAYOUTS[layout]()):
        model = build(lambda: ClippingOptimizer(keras.optimizers.SGD(1.0), method, **kwargs),
                      distribution)
        w0 = [np.asarray(w, np.float64) for w in model.trainable_weights]
        fit(model, distribution, x[:GLOBAL_BATCH], y[:GLOBAL_BATCH])
        steps[distribution is None] = [a - np.asarray(w) for a, w in
                                       zip(w0, model.trainable_weights, strict=True)]
    assert_arrays_match(steps[False], steps[True])
    if method == "global_norm":
        applied = np.sqrt(sum(np.sum(d ** 2) for d in steps[False]))  # SGD(1.0): step == grad
        assert applied <= kwargs["max_norm"] * (1 + 1e-6)
        assert applied == pytest.approx(kwargs["max_norm"], rel=1e-6)


def test_a_second_monitored_fit_reuses_its_step_and_matches_one_device():
    """The monitored train function kept between fits (tests/test_monitor_refit.py), reused
    under DataParallel, still reduces the global batch's gradient."""
    x, y = data()
    runs = {}
    for distribution in (None, data_parallel()):
        model = build(lambda: keras.optimizers.SGD(0.01), distribution)
        functions, histories = [], []
        for _ in range(2):
            monitor = gh.GradientHealthMonitor(stats="all")
            fit(model, distribution, x, y, [monitor])
            (entry,) = model.__dict__["_gradhealth_fit_cache"].entries.values()
            functions.append(entry[2])
            histories.append(monitor.history)
        assert functions[0] is functions[1]
        runs[distribution is None] = (model, histories)
    (one, h_one), (two, h_two) = runs[True], runs[False]
    for a, b in zip(h_one, h_two, strict=True):
        assert_histories_match(b, a, ("grad_norm", "global_norm", "weight_norm"))
    assert_arrays_match(two.weights, one.weights)

"""Clipping rules: NumPy maths (properties vs float64 references), device versions, and
ClippingOptimizer inside model.fit (run once per backend)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradhealth.core import clipping as C
from gradhealth.ops import clipping as OC
from gradhealth.optim import ClippingOptimizer

SHAPES = st.sampled_from([(3,), (4, 3), (2, 2, 3), (1,), (5, 1)])
FLOATS = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def grad_lists(draw, min_size=1, max_size=4):
    shapes = draw(st.lists(SHAPES, min_size=min_size, max_size=max_size))
    return [draw(hnp.arrays(np.float64, s, elements=FLOATS)) for s in shapes]


@st.composite
def grads_and_params(draw):
    shapes = draw(st.lists(SHAPES, min_size=1, max_size=4))
    grads = [draw(hnp.arrays(np.float64, s, elements=FLOATS)) for s in shapes]
    params = [draw(hnp.arrays(np.float64, s, elements=FLOATS)) for s in shapes]
    return grads, params


def ref_global_norm(grads):
    return math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in grads))


# -- NumPy properties -------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(grad_lists(), st.floats(1e-3, 1e3))
def test_global_norm_clip_bounds_and_equality(grads, max_norm):
    clipped, norm = C.clip_by_global_norm(grads, max_norm)
    assert norm == pytest.approx(ref_global_norm(grads), rel=1e-12, abs=1e-300)
    after = ref_global_norm(clipped)
    assert after <= max_norm * (1 + 1e-12)
    if norm > max_norm:
        assert after == pytest.approx(max_norm, rel=1e-12)
    else:
        for g, c in zip(grads, clipped, strict=True):
            np.testing.assert_array_equal(g, c)


@settings(max_examples=50, deadline=None)
@given(grad_lists(), st.floats(1e-3, 1e3))
def test_clipping_is_idempotent(grads, limit):
    once, _ = C.clip_by_global_norm(grads, limit)
    twice, _ = C.clip_by_global_norm(once, limit)
    for a, b in zip(once, twice, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
    for fn in (C.clip_by_norm, C.clip_by_value):
        once = fn(grads, limit)
        for a, b in zip(once, fn(once, limit), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


@settings(max_examples=50, deadline=None)
@given(grad_lists(), st.floats(1e-3, 1e3))
def test_clip_by_norm_caps_each_tensor_and_keeps_direction(grads, max_norm):
    for g, c in zip(grads, C.clip_by_norm(grads, max_norm), strict=True):
        n = float(np.linalg.norm(g))
        assert float(np.linalg.norm(c)) <= max_norm * (1 + 1e-12)
        if n > 0:
            np.testing.assert_allclose(c, g * min(1.0, max_norm / n), rtol=1e-12)


@settings(max_examples=50, deadline=None)
@given(grads_and_params(), st.floats(1e-3, 0.5), st.floats(1e-4, 1e-1))
def test_agc_keeps_every_unit_ratio_below_clip_factor(gp, clip_factor, eps):
    grads, params = gp
    clipped = C.adaptive_clip(grads, params, clip_factor, eps)
    for g, p, c in zip(grads, params, clipped, strict=True):
        if p.ndim <= 1:
            w_norm, g_norm, c_norm = np.abs(p), np.abs(g), np.abs(c)
        else:
            axes = tuple(range(p.ndim - 1))
            w_norm, g_norm, c_norm = (np.sqrt(np.sum(a**2, axis=axes)) for a in (p, g, c))
        ratio = c_norm / np.maximum(w_norm, eps)
        assert np.all(ratio <= clip_factor * (1 + 1e-9))
        untouched = g_norm / np.maximum(w_norm, eps) <= clip_factor
        # Units already within the limit are left exactly as they were.
        if p.ndim >= 2:
            np.testing.assert_array_equal(c[..., untouched], g[..., untouched])
        else:
            np.testing.assert_array_equal(c[untouched], g[untouched])


def test_unitwise_norm_is_per_output_unit_of_dense_and_conv_kernels():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(5, 3))
    np.testing.assert_allclose(C.unitwise_norm(dense)[0], np.linalg.norm(dense, axis=0))
    conv = rng.normal(size=(3, 3, 2, 4))  # (h, w, in, out)
    expected = np.array([np.linalg.norm(conv[..., o]) for o in range(4)])
    assert C.unitwise_norm(conv).shape == (1, 1, 1, 4)
    np.testing.assert_allclose(C.unitwise_norm(conv).ravel(), expected)
    np.testing.assert_array_equal(C.unitwise_norm(np.array([-2.0, 3.0])), [2.0, 3.0])
    tiny = np.full((4, 2), 1e-25, dtype=np.float32)
    assert np.all(C.unitwise_norm(tiny) > 0)  # no underflow


def test_agc_eps_keeps_zero_initialised_bias_trainable():
    out = C.adaptive_clip([np.array([1.0, -1.0])], [np.zeros(2)], clip_factor=0.01, eps=1e-3)[0]
    np.testing.assert_allclose(out, [1e-5, -1e-5])


def test_autoclip_matches_percentile_of_history():
    rng = np.random.default_rng(1)
    ac = C.AutoClip(percentile=25)
    norms = []
    for _ in range(20):
        g = [rng.normal(size=(3, 2)) * rng.uniform(0.1, 10)]
        norms.append(ref_global_norm(g))
        clipped, limit = ac.clip(g)
        assert limit == pytest.approx(np.percentile(norms, 25))
        assert ref_global_norm(clipped) == pytest.approx(min(norms[-1], limit))
    ac.reset()
    assert ac.history.size == 0 and math.isnan(ac.threshold)


def test_none_entries_pass_through_and_nonfinite_left_alone():
    grads = [None, np.array([3.0, 4.0])]
    assert C.clip_by_value(grads, 1.0)[0] is None
    assert C.clip_by_norm(grads, 1.0)[0] is None
    assert C.adaptive_clip(grads, [np.zeros(1), np.ones(2)])[0] is None
    bad = [np.array([np.inf, 1.0])]
    clipped, norm = C.clip_by_global_norm(bad, 1.0)
    assert norm == math.inf
    np.testing.assert_array_equal(clipped[0], bad[0])
    assert math.isnan(C.global_norm([np.array([np.nan])]))


def test_float32_dtype_is_preserved():
    g = [np.ones((2, 2), np.float32) * 10]
    assert C.clip_by_global_norm(g, 1.0)[0][0].dtype == np.float32
    assert C.adaptive_clip(g, [np.ones((2, 2), np.float32)])[0].dtype == np.float32


@pytest.mark.parametrize("call, message", [
    (lambda: C.clip_by_value([np.ones(2)], 0), "clip_value=0"),
    (lambda: C.clip_by_global_norm([np.ones(2)], -1.0), "max_norm=-1.0"),
    (lambda: C.adaptive_clip([np.ones(2)], [np.ones(2)], clip_factor=0), "clip_factor=0"),
    (lambda: C.adaptive_clip([np.ones(2)], []), "same length"),
    (lambda: C.adaptive_clip([np.ones(2)], [np.ones(3)]), "shape"),
    (lambda: C.AutoClip(percentile=101), "percentile=101"),
])
def test_invalid_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- device versions agree with NumPy and with Keras/TF ---------------------------------------
def to_np(t):
    return keras.ops.convert_to_numpy(t)


@settings(max_examples=30, deadline=None)
@given(grads_and_params(), st.floats(1e-2, 1e2))
def test_ops_versions_agree_with_numpy(gp, limit):
    grads, params = gp
    g32 = [g.astype(np.float32) for g in grads]
    p32 = [p.astype(np.float32) for p in params]
    tg = [keras.ops.convert_to_tensor(g) for g in g32]
    tp = [keras.ops.convert_to_tensor(p) for p in p32]
    pairs = [
        (OC.ops_clip_by_value(tg, limit), C.clip_by_value(g32, limit)),
        (OC.ops_clip_by_norm(tg, limit), C.clip_by_norm(g32, limit)),
        (OC.ops_clip_by_global_norm(tg, limit)[0], C.clip_by_global_norm(g32, limit)[0]),
        (OC.ops_adaptive_clip(tg, tp, 0.05, 1e-3), C.adaptive_clip(g32, p32, 0.05, 1e-3)),
    ]
    for device, reference in pairs:
        for d, r in zip(device, reference, strict=True):
            np.testing.assert_allclose(to_np(d), r, rtol=2e-5, atol=1e-30)
    assert float(to_np(OC.ops_global_norm(tg))) == pytest.approx(C.global_norm(g32), rel=1e-5)


def test_ops_norm_does_not_underflow():
    tiny = keras.ops.convert_to_tensor(np.full((1000,), 1e-25, np.float32))
    assert float(to_np(OC.ops_norm(tiny))) == pytest.approx(1e-25 * math.sqrt(1000), rel=1e-5)


def test_global_norm_clip_agrees_with_tensorflow():
    import tensorflow as tf

    rng = np.random.default_rng(3)
    grads = [rng.normal(size=s).astype(np.float32) * 5 for s in [(4, 3), (3,), (3, 2)]]
    tf_clipped, tf_norm = tf.clip_by_global_norm(grads, 2.0)
    ours, norm = C.clip_by_global_norm(grads, 2.0)
    assert norm == pytest.approx(float(tf_norm), rel=1e-6)
    for a, b in zip(ours, tf_clipped, strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5)
    for a, b in zip(C.clip_by_norm(grads, 1.0), [tf.clip_by_norm(g, 1.0) for g in grads],
                    strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5)


# -- ClippingOptimizer in model.fit (active backend) ------------------------------------------
def small_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(1)])
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 6)).astype(np.float32), rng.normal(size=(32, 1)).astype(np.float32)


@pytest.mark.parametrize("method, kwargs", [
    ("value", {"clip_value": 1e-3}),
    ("norm", {"max_norm": 1e-3}),
    ("global_norm", {"max_norm": 1e-3}),
    ("agc", {"clip_factor": 1e-3}),
])
def test_clipping_optimizer_step_matches_numpy_rule(method, kwargs, data):
    """One SGD(lr=1) step moves the weights by exactly minus the NumPy-clipped gradient."""
    from gradhealth.diagnosis import layer_gradients

    x, y = data
    model = small_model()
    model.compile(optimizer=ClippingOptimizer(keras.optimizers.SGD(1.0), method, **kwargs),
                  loss="mse")
    before = [to_np(v.value).astype(np.float64) for v in model.trainable_variables]
    grads = list(layer_gradients(model, x, y, loss="mse").values())
    expected = {
        "value": lambda: C.clip_by_value(grads, **kwargs),
        "norm": lambda: C.clip_by_norm(grads, **kwargs),
        "global_norm": lambda: C.clip_by_global_norm(grads, **kwargs)[0],
        "agc": lambda: C.adaptive_clip(grads, before, **kwargs),
    }[method]()
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    for b, v, e in zip(before, model.trainable_variables, expected, strict=True):
        np.testing.assert_allclose(b - to_np(v.value), e, rtol=2e-3, atol=1e-7)


def test_autoclip_optimizer_tracks_percentile_of_global_norms(data):
    x, y = data
    model = small_model()
    opt = ClippingOptimizer(keras.optimizers.SGD(0.05), "autoclip", percentile=50,
                              history_size=16)
    model.compile(optimizer=opt, loss="mse")
    model.fit(x, y, batch_size=8, epochs=5, shuffle=False, verbose=0)  # 20 steps > 16
    history = to_np(opt.autoclip_history)
    assert int(to_np(opt.autoclip_count)) == 20
    assert np.all(history > 0)
    assert float(to_np(opt.autoclip_threshold)) == pytest.approx(np.percentile(history, 50),
                                                                 rel=1e-5)
    assert all(np.isfinite(to_np(v.value)).all() for v in model.trainable_variables)


def test_clipping_optimizer_skip_nonfinite_and_delegation(data):
    x, y = data
    xp = x.copy()
    xp[0, 0] = np.inf
    model = small_model()
    inner = keras.optimizers.SGD(0.1)
    opt = ClippingOptimizer(inner, "global_norm", max_norm=1.0, skip_nonfinite=True)
    model.compile(optimizer=opt, loss="mse")
    before = [to_np(v.value) for v in model.trainable_variables]
    model.fit(xp, y, batch_size=32, epochs=1, verbose=0)
    for b, v in zip(before, model.trainable_variables, strict=True):
        np.testing.assert_array_equal(b, to_np(v.value))
    opt.learning_rate = 0.5
    assert float(to_np(inner.learning_rate)) == pytest.approx(0.5)
    clone = ClippingOptimizer.from_config(opt.get_config())
    assert clone.method == "global_norm" and clone.max_norm == 1.0
    assert isinstance(clone.inner_optimizer, keras.optimizers.SGD)


def test_stateful_apply_skips_a_nonfinite_step_and_applies_a_finite_one():
    """``apply`` outside ``fit`` (eager on JAX and torch: a Python branch on the flag; a
    one-call conditional on TensorFlow): a NaN step leaves weights and optimizer state alone."""
    v = keras.Variable(np.ones(3, "float32"))
    opt = ClippingOptimizer(keras.optimizers.SGD(0.5), "global_norm", max_norm=10.0,
                            skip_nonfinite=True)
    opt.build([v])
    opt.apply([keras.ops.convert_to_tensor(np.array([1.0, np.nan, 0.0], "float32"))], [v])
    np.testing.assert_array_equal(to_np(v.value), [1.0, 1.0, 1.0])
    assert int(to_np(opt.iterations)) == 0
    opt.apply([keras.ops.convert_to_tensor(np.array([2.0, 0.0, -2.0], "float32"))], [v])
    np.testing.assert_allclose(to_np(v.value), [0.0, 1.0, 2.0])
    assert int(to_np(opt.iterations)) == 1


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch's meta device")
def test_control_cond_leaves_a_meta_predicate_to_keras():
    """A meta-device flag (Keras' symbolic pass on torch) has no value: ``keras.ops.cond``
    decides, and on the meta device it takes the true branch."""
    import torch

    from gradhealth.ops.control import cond

    with keras.device("meta"):
        flag = keras.ops.convert_to_tensor(False)
        assert flag.device.type == "meta"
        assert cond(flag, lambda: "true", lambda: "false") == "true"
    assert cond(torch.tensor(False), lambda: "true", lambda: "false") == "false"


@pytest.mark.parametrize("kwargs, error, message", [
    ({"method": "median"}, ValueError, "method='median'"),
    ({"method": "value"}, ValueError, "clip_value=None"),
    ({"method": "norm"}, ValueError, "max_norm=None"),
    ({"method": "agc", "clip_factor": -1}, ValueError, "clip_factor=-1"),
    ({"method": "autoclip", "history_size": 0}, ValueError, "history_size=0"),
])
def test_clipping_optimizer_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        ClippingOptimizer(keras.optimizers.SGD(0.1), **kwargs)


def test_clipping_optimizer_optimizer_argument():
    assert isinstance(ClippingOptimizer("adam", "agc").inner_optimizer, keras.optimizers.Adam)
    with pytest.raises(ValueError, match="optimizer='nope'"):
        ClippingOptimizer("nope", "agc")
    with pytest.raises(TypeError, match="optimizer=3"):
        ClippingOptimizer(3, "agc")

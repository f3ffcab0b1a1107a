"""Statistics of long tensors (millions of entries) stay within 1e-5 of float64.

A float32 reduction that adds every entry into a few accumulators loses precision as the
tensor grows: torch's CPU norm kernel was 1.1e-4 off at 4 million entries and 8.7e-4 at 16
million (an embedding of 30k x 768 has 23 million), and a float32 count stops at 2^24. The
monitor's and the checkup's device statistics are checked here at those lengths on every
backend: the one-pass path, and the exact passes (a NaN entry sends the tensor there), against
float64 NumPy, and end to end through the checkup's statistics against the backend's own
autodiff.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_monitor_ring import reference

from gradhealth import gradient_stats
from gradhealth.adapters.fused import stats_kernels
from gradhealth.ops import stats as ops_stats
from gradhealth.ops.stats import DEVICE_STATS, device_stats

FRACTIONS = ("zero_fraction", "dead_unit_fraction")


@pytest.mark.parametrize("shape", [(2**17 + 3,), (1024, 4099), (2**24 + 5,)],
                         ids=["2^17+3", "4M-matrix", "2^24+5"])
@pytest.mark.parametrize("poison", [False, True], ids=["clean", "nan"])
def test_long_tensors_match_float64(shape, poison):
    rng = np.random.default_rng(0)
    n = int(np.prod(shape))
    # Magnitudes spread over 4x and entries far from zero in the weight: the sums of the
    # squares are the ones float32 accumulation gets wrong.
    g = (rng.standard_normal(n, dtype=np.float32) * rng.uniform(0.5, 2.0, n).astype(np.float32))
    g[rng.random(n) < 0.01] = 0.0
    if poison:
        g[n // 3] = np.nan
    w = (g + 3.0).astype(np.float32)
    w[n // 3] = 3.0
    g, w = g.reshape(shape), w.reshape(shape)
    table = keras.ops.convert_to_numpy(device_stats(
        [keras.ops.convert_to_tensor(g)], [keras.ops.convert_to_tensor(w)],
        kernels=stats_kernels(ops_stats), stats=DEVICE_STATS))[0]
    expected = reference(g, w)
    for col, value in expected.items():
        got = table[DEVICE_STATS.index(col)]
        if col == "nonfinite_count":
            assert got == value
        elif col in FRACTIONS:  # counts past 2^24 round in float32: 1e-7 of the total
            assert got == pytest.approx(value, abs=1e-6), col
        else:
            assert got == pytest.approx(value, rel=1e-5, abs=0.0), col


def _reference_gradients(model, x, y, loss):
    """The loss gradients from the backend's own autodiff, without gradhealth."""
    backend = keras.backend.backend()
    variables = model.trainable_variables
    if backend == "tensorflow":
        import tensorflow as tf  # lazy: TensorFlow backend only

        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=False))
        return [tf.convert_to_tensor(g).numpy() for g in tape.gradient(value, variables)]
    if backend == "jax":
        import jax  # lazy: JAX backend only

        def objective(values):
            out, _ = model.stateless_call(values, [v.value for v in model.non_trainable_variables],
                                          x, training=False)
            return loss(y, out)

        return [np.asarray(g) for g in jax.grad(objective)([v.value for v in variables])]
    import torch  # lazy: torch backend only

    model.zero_grad()
    loss(torch.as_tensor(y), model(torch.as_tensor(x), training=False)).backward()
    return [v.value.grad.detach().cpu().numpy() for v in variables]


def test_checkup_statistics_of_a_wide_layer_match_float64():
    """End to end: the checkup's per-variable statistics of a 2048 x 2048 kernel (4.2 million
    gradient entries, all nonzero) equal float64 NumPy on the backend's own gradients. torch's
    single-call CPU norm was 1e-4 off here."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(2048, activation="relu"),
                              keras.layers.Dense(2048, activation="tanh"), keras.layers.Dense(10)])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 64)).astype("float32")
    y = rng.integers(0, 10, size=128)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    table = gradient_stats(model, x, y, loss=loss).set_index("path")
    for v, g in zip(model.trainable_variables, _reference_gradients(model, x, y, loss),
                    strict=True):
        expected = reference(g, keras.ops.convert_to_numpy(v.value))
        for col in ("grad_norm", "grad_mean_abs", "grad_max_abs", "weight_norm"):
            assert table.loc[v.path, col] == pytest.approx(expected[col], rel=1e-5), (v.path, col)


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="torch's own kernels: run once, in the torch test process")
@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 7, 2**16, 2**16 + 1, 2**17, 2**17 + 1, 3 * 2**16,
                                 3 * 2**16 + 5]), min_size=1, max_size=5),
       st.sampled_from([0, 1, 2, np.inf]), st.integers(0, 2**31 - 1))
def test_torch_norms_keep_order_and_match_float64(lengths, order, seed):
    """Short and long tensors mixed (on both sides of ONE_CALL_MAX and of whole rows): each
    norm lands at its tensor's place and equals float64 NumPy."""
    import torch  # lazy: torch backend only

    from gradhealth.adapters.torch_kernels import norms

    rng = np.random.default_rng(seed)
    arrays = []
    for n in lengths:
        a = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
        a[rng.random(n) < 0.3] = 0.0
        arrays.append(a)
    got = norms([torch.from_numpy(a) for a in arrays], order).numpy()
    for value, a in zip(got, arrays, strict=True):
        a64 = np.abs(a.astype(np.float64))
        expected = (np.count_nonzero(a64) if order == 0 else a64.max(initial=0.0)
                    if order == np.inf else np.sum(a64 ** order) ** (1.0 / order))
        assert value == pytest.approx(expected, rel=1e-5, abs=0.0)

"""The one-pass statistics accept zero-initialized weights and still refuse tiny ones.

Every fresh model has all-zero variables (biases, normalization offsets). Their sum of squares
is 0, which is exact; a zero sum can also come from entries too small to square in float32,
which is not. The one-pass path (`direct_stats`) must tell the two apart, so that a checkup of
an untrained model does not take the two exact passes, and a tiny weight still gets its norm.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradhealth.adapters.fused import stats_kernels
from gradhealth.core.stats import DEVICE_STATS, ZERO_CHECK_BELOW
from gradhealth.ops import stats as ops_stats
from gradhealth.ops.stats import device_stats

WEIGHT = DEVICE_STATS.index("weight_norm")


def _run(grads, weights):
    kernels = stats_kernels(ops_stats)
    g = [keras.ops.convert_to_tensor(a) for a in grads]
    w = [keras.ops.convert_to_tensor(a) for a in weights]
    _, ok = kernels.direct_stats(g, w, DEVICE_STATS)
    table = device_stats(g, w, kernels=kernels)
    return keras.ops.convert_to_numpy(ok), keras.ops.convert_to_numpy(table)


def test_zero_initialized_biases_take_the_one_pass_path():
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(4,)).astype("float32"),
             rng.normal(size=(4,)).astype("float32")]
    weights = [rng.normal(size=(8, 4)).astype("float32"), np.zeros(4, "float32"),
               np.zeros(4, "float32")]
    ok, table = _run(grads, weights)
    assert ok.all(), ok
    np.testing.assert_array_equal(table[1:, WEIGHT], 0.0)
    assert table[0, WEIGHT] == pytest.approx(np.linalg.norm(weights[0].astype(np.float64)),
                                             rel=1e-6)


@settings(max_examples=20, deadline=None)
@given(exponent=st.integers(-30, -23), size=st.integers(1, 64), zeros=st.integers(0, 63))
def test_weights_too_small_to_square_fall_back_and_keep_their_norm(exponent, size, zeros):
    """Entries of 1e-30..1e-23 square to 0 in float32: not 'all zero', so the exact path runs.

    (Below float32's smallest normal, 1.2e-38, XLA's CPU code flushes values to zero: the
    statistics' promise starts at 1e-30, as in the float64-reference tests.)
    """
    rng = np.random.default_rng(size)
    w = (rng.uniform(1.0, 2.0, size=size) * 10.0 ** exponent).astype("float32")
    w[:min(zeros, size - 1)] = 0.0  # at least one entry stays nonzero
    grads = [np.ones(size, "float32")]
    ok, table = _run(grads, [w])
    expected = np.linalg.norm(w.astype(np.float64))
    assert np.sum(w * w, dtype=np.float32) == 0.0  # the case this test is about
    assert not ok[0]
    assert table[0, WEIGHT] == pytest.approx(expected, rel=1e-5, abs=1e-45)


def test_a_large_all_zero_weight_is_left_to_the_exact_passes():
    """Above ZERO_CHECK_BELOW entries the extra test would be one more pass per step."""
    n = ZERO_CHECK_BELOW
    ok, table = _run([np.ones(n, "float32")], [np.zeros(n, "float32")])
    assert not ok[0]
    assert table[0, WEIGHT] == 0.0

"""The exact passes compute only the statistics asked for, and those exactly.

On a GPU (JAX, :func:`gradhealth.adapters.fused.branch_free`) every logged step takes the two
exact passes, so :func:`gradhealth.ops.stats.grad_scan` and :func:`~gradhealth.ops.stats.
scaled_sums` are told which statistics are wanted and skip the sums of the others (the monitor's
core statistics need one max, one count and one sum per gradient, and the weight's pair). The
passes are plain ``keras.ops``, so this runs on every backend; each subset is checked against
float64 NumPy from 1e-30 to 1e30, with NaN/inf entries, and the skipped columns must be NaN.
The one-pass statistics that the monitor takes on a CPU are checked per subset too.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_monitor_ring import reference

from gradhealth.adapters.fused import StatsKernels, stats_kernels
from gradhealth.ops import stats as ops_stats
from gradhealth.ops.stats import DEVICE_STATS, device_stats, resolve_stats

BRANCH_FREE = StatsKernels(grad_scan=ops_stats.grad_scan, scaled_sums=ops_stats.scaled_sums,
                           grad_histograms=ops_stats.grad_histograms,
                           direct_stats=ops_stats.direct_stats,
                           finite_guard=ops_stats.all_finite, cond=ops_stats.cond,
                           branch_free=True)

SHAPES = [(), (5,), (4, 3), (2, 3, 4)]


@st.composite
def variables(draw):
    """A few (gradient, weight) pairs: shared shapes (stacked together) and odd ones."""
    n = draw(st.integers(1, 5))
    out = []
    for _ in range(n):
        shape = draw(st.sampled_from(SHAPES))
        seed = draw(st.integers(0, 2**31 - 1))
        rng = np.random.default_rng(seed)
        g = rng.normal(size=shape) * 10.0 ** draw(st.integers(-30, 30))
        if draw(st.booleans()):
            g = np.where(rng.random(size=shape) < 0.5, 0.0, g)  # zeros and dead units
        poison = draw(st.sampled_from([None, np.nan, np.inf, -np.inf]))
        g = np.asarray(g, np.float32)
        if poison is not None and g.size:
            g.reshape(-1)[draw(st.integers(0, g.size - 1))] = poison
        w = np.asarray(rng.normal(size=shape) * 10.0 ** draw(st.integers(-30, 30)), np.float32)
        out.append((g.reshape(shape), w.reshape(shape)))
    return out


@pytest.mark.parametrize("kernels", ["branch_free", "backend"])
@settings(max_examples=40, deadline=None)
@given(pairs=variables(), subset=st.sets(st.sampled_from(DEVICE_STATS)))
def test_each_subset_exact_and_the_rest_nan(kernels, pairs, subset):
    """Both designs: the branch-free passes, and the running backend's one pass with the exact
    passes as its fallback (which NaN/inf entries and magnitudes near 1e+-30 send it to); the
    fallback too computes only the statistics asked for."""
    stats = resolve_stats(sorted(subset))  # grad_norm and nonfinite_count always join
    grads = [keras.ops.convert_to_tensor(g) for g, _ in pairs]
    weights = [keras.ops.convert_to_tensor(w) for _, w in pairs]
    chosen = BRANCH_FREE if kernels == "branch_free" else stats_kernels(ops_stats)
    table = keras.ops.convert_to_numpy(device_stats(grads, weights, kernels=chosen,
                                                    stats=stats))
    for row, (g, w) in zip(table, pairs, strict=True):
        expected = reference(g, w)
        if g.ndim == 0:  # a scalar has no units (gradhealth.core.stats.dead_unit_fraction)
            expected["dead_unit_fraction"] = 0.0
        for j, col in enumerate(DEVICE_STATS):
            if col not in stats:
                assert np.isnan(row[j]), col
            elif col == "nonfinite_count":
                assert row[j] == expected[col]
            else:
                assert row[j] == pytest.approx(expected[col], rel=1e-5, abs=0.0, nan_ok=True), (
                    col, g.shape)


def test_skipped_sums_are_not_computed():
    """The core statistics' passes leave the zero count, dead fraction, sum |s| and variance at
    0: they were not computed (the masked table would hide a wasted computation)."""
    rng = np.random.default_rng(0)
    grads = [keras.ops.convert_to_tensor(rng.normal(size=(4, 3)).astype("float32"))]
    core = resolve_stats("core")
    scan = ops_stats.grad_scan(grads, core)
    sums = keras.ops.convert_to_numpy(ops_stats.scaled_sums(grads, grads, scan, core))
    scan = keras.ops.convert_to_numpy(scan)
    assert scan[0, 0] > 0 and scan[0, 2] == 0 and scan[0, 3] == 0
    assert sums[0, 0] > 0 and sums[0, 1] == 0 and sums[0, 2] == 0 and sums[0, 4] > 0
    full = keras.ops.convert_to_numpy(ops_stats.grad_scan(grads))
    assert full[0, 0] == scan[0, 0]


@st.composite
def moderate_variables(draw):
    """(gradient, weight) pairs well inside float32's range, where the one pass must be valid,
    the largest magnitude negative in some, a NaN/inf entry in some."""
    out = []
    for _ in range(draw(st.integers(1, 5))):
        shape = draw(st.sampled_from(SHAPES))
        rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
        g = rng.normal(size=shape) * 10.0 ** draw(st.integers(-6, 6))
        if g.size:
            g.reshape(-1)[rng.integers(g.size)] = draw(st.sampled_from([-1.0, 1.0])) * (
                2.0 * np.abs(g).max() + 1e-30)  # the largest magnitude, on either side
        poison = draw(st.sampled_from([None, None, np.nan, np.inf, -np.inf]))
        g = np.asarray(g, np.float32).reshape(shape)
        if poison is not None and g.size:
            g.reshape(-1)[draw(st.integers(0, g.size - 1))] = poison
        w = np.asarray(1.0 + rng.normal(size=shape), np.float32).reshape(shape)
        out.append((g, w))
    return out


@settings(max_examples=40, deadline=None)
@given(moderate_variables(), st.sampled_from([
    "core", ("grad_max_abs",), ("grad_max_abs", "grad_std", "zero_fraction"),
    ("grad_max_abs", "grad_mean_abs"), ("grad_max_abs", "dead_unit_fraction"), "all"]))
def test_one_pass_subsets_exact(pairs, subset):
    """The running backend's one-pass statistics (the monitor's path on a CPU), per subset.

    The subsets above only reach the branch-free passes. A finite variable well inside
    float32's range must be valid (else the fast path goes unused) and match float64 NumPy,
    with its largest entry on either side of zero; one with a NaN/inf entry must be sent to the
    exact passes.
    """
    stats = resolve_stats(subset)
    kernels = stats_kernels(ops_stats)
    grads = [keras.ops.convert_to_tensor(g) for g, _ in pairs]
    weights = [keras.ops.convert_to_tensor(w) for _, w in pairs]
    table, ok = (keras.ops.convert_to_numpy(t)
                 for t in kernels.direct_stats(grads, weights, stats))
    for row, valid, (g, w) in zip(table, ok, pairs, strict=True):
        assert bool(valid) == bool(np.isfinite(g).all()), g
        if not valid:
            continue
        expected = reference(g, w)
        if g.ndim == 0:
            expected["dead_unit_fraction"] = 0.0
        for j, col in enumerate(DEVICE_STATS):
            if col in stats:
                assert row[j] == pytest.approx(expected[col], rel=1e-5, abs=0.0,
                                               nan_ok=True), (col, g.shape)

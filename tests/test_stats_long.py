"""Statistics of long tensors (millions of entries) stay within 1e-5 of float64.

A float32 reduction that adds every entry into a few accumulators loses precision as the
tensor grows: torch's CPU norm kernel was 1.1e-4 off at 4 million entries and 8.7e-4 at 16
million (an embedding of 30k x 768 has 23 million), and a float32 count stops at 2^24. The
monitor's and the checkup's device statistics are checked here at those lengths on every
backend: the one-pass path, and the exact passes (a NaN entry sends the tensor there), against
float64 NumPy.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from test_monitor_ring import reference

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

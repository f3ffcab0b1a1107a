"""The embedding rows a checkup reads: their norm is reduced where the table lives."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_stats import ref_norm, scaled_arrays

from gradhealth.diagnosis.context import _device_row_norm


@settings(max_examples=25, deadline=None)
@given(scaled_arrays(), st.data())
def test_device_row_norm_matches_float64_reference_of_the_chosen_rows(a, data):
    table = a.reshape(a.shape[0], -1)
    poison = data.draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=2))
    for value in poison:  # non-finite entries are left out, as robust_norm leaves them out
        i = data.draw(st.integers(0, table.size - 1))
        table.reshape(-1)[i] = value
    rows = np.unique(data.draw(st.lists(st.integers(0, table.shape[0] - 1), min_size=1,
                                        max_size=8)))
    variable = keras.Variable(table, dtype="float32", trainable=False)
    got = _device_row_norm(variable, rows)
    expected = ref_norm(table[rows])
    assert got == pytest.approx(expected, rel=1e-5, abs=0)


def test_device_row_norm_of_zero_rows_is_zero():
    variable = keras.Variable(np.zeros((4, 3), np.float32), trainable=False)
    assert _device_row_norm(variable, np.array([1, 2])) == 0.0

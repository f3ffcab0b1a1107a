"""The embedding rows a checkup reads: their norm is reduced where the table lives."""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_stats import ref_norm, scaled_arrays

from gradhealth.adapters.autodiff import compiled
from gradhealth.diagnosis.context import _device_row_norm, _touched_rows

context_module = sys.modules["gradhealth.diagnosis.context"]


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


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 50), st.lists(st.integers(-3, 60), min_size=1, max_size=40),
       st.sampled_from(["int32", "int64", "float32"]), st.booleans())
def test_touched_rows_are_the_distinct_ids_or_the_rows_with_a_gradient(n_rows, ids, dtype, direct):
    ids = np.asarray(ids).astype(dtype).reshape(-1, 1 if len(ids) % 2 else 2)
    grad = np.zeros((n_rows, 3), np.float32)
    grad[::3] = 1.0
    rows, source = _touched_rows(ids, grad, n_rows, direct)
    usable = direct and dtype != "float32" and ids.min() >= 0 and ids.max() < n_rows
    if usable:  # every id in range: the distinct ids, in order
        assert source == "token ids in x"
        np.testing.assert_array_equal(rows, np.unique(ids))
    else:  # not token ids of this table: the rows whose gradient is not zero
        assert source == "rows with a non-zero gradient"
        np.testing.assert_array_equal(rows, np.arange(0, n_rows, 3))


def test_row_norm_is_one_compiled_call_per_row_count(monkeypatch):
    """JAX traces the row norm once per power-of-two row count (one program, not one launch per
    operation); TensorFlow and torch run it eagerly, once per call."""
    calls = []
    original = context_module._row_norm

    def counting(table, index, valid):
        calls.append(int(index.shape[0]))
        return original(table, index, valid)

    monkeypatch.setattr(context_module, "_ROW_NORM", compiled(counting))
    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    variable = keras.Variable(table, trainable=False)
    for rows in ([1, 2, 3], [0, 5, 7, 9], [0, 1, 2, 3, 4]):  # padded to 4, 4 and 8 rows
        got = _device_row_norm(variable, np.asarray(rows))
        assert got == pytest.approx(ref_norm(table[rows]), rel=1e-6)
    expected = [4, 8] if keras.backend.backend() == "jax" else [4, 4, 8]
    assert calls == expected

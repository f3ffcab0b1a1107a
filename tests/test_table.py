"""core.table (the diagnosis's column form) and the diagnosis on it, against plain references."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradhealth import Thresholds, diagnose
from gradhealth.core import diagnosis
from gradhealth.core.table import Table, as_table, like


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="column 'b' with 1 values, the others with 2"):
        Table({"a": [1, 2], "b": [3]})


def test_take_row_and_frame_round_trip():
    t = Table({"layer": ["a", "b", "c"], "shape": [(4, 4), (4,), (2, 3)], "x": [1.0, 2.0, 3.0]})
    assert len(t) == 3 and t.columns == ["layer", "shape", "x"]
    assert t.take(t["x"] > 1.5)["layer"].tolist() == ["b", "c"]
    assert t.take([2, 0])["shape"].tolist() == [(2, 3), (4, 4)]
    assert len(t.take(np.zeros(3, dtype=bool))) == 0
    assert t.row(1) == {"layer": "b", "shape": (4,), "x": 2.0}
    frame = t.to_frame()
    assert list(frame.columns) == t.columns and frame["shape"].iloc[2] == (2, 3)
    back = Table.from_frame(frame)
    assert all(np.array_equal(back[c], t[c]) for c in t)


def test_text_columns_hold_longer_strings_later():
    t = Table({"status": ["ok", "ok"]})
    t["status"][0] = "nonfinite"  # a fixed-width '<U2' array would keep 'no'
    assert t["status"][0] == "nonfinite"


def test_as_table_refuses_other_types_and_like_keeps_the_kind():
    with pytest.raises(TypeError, match="Received: dict"):
        as_table({"a": [1]})
    t = Table({"a": [1]})
    assert like(pd.DataFrame({"a": [1]}), t).equals(pd.DataFrame({"a": [1]}))
    assert like(t, t) is t


# --- aggregation against a plain-Python float64 reference -----------------------------------

finite_norm = st.floats(1e-30, 1e30)
variable = st.fixed_dictionaries({
    "kernel": st.booleans(),
    "grad_norm": st.one_of(finite_norm, st.just(0.0), st.just(math.nan)),
    "weight_norm": st.one_of(finite_norm, st.just(0.0)),
    "dead": st.floats(0.0, 1.0),
    "size": st.integers(1, 5000),
    "connected": st.booleans(),
})


def _frame(layers: list[list[dict]]) -> pd.DataFrame:
    rows = []
    for i, variables in enumerate(layers):
        for j, v in enumerate(variables):
            bad = math.isnan(v["grad_norm"])
            rows.append({
                "layer": f"layer_{i}", "variable": f"v{j}", "path": f"layer_{i}/v{j}",
                "shape": (v["size"], 1) if v["kernel"] else (v["size"],), "size": v["size"],
                "grad_norm": v["grad_norm"], "grad_mean_abs": 0.0 if bad else 1e-3,
                "grad_max_abs": math.nan if bad else v["grad_norm"], "grad_std": 0.0,
                "zero_fraction": 0.0, "nonfinite_count": 1 if bad else 0,
                "weight_norm": v["weight_norm"], "grad_to_weight": math.nan,
                "dead_unit_fraction": v["dead"], "connected": v["connected"]})
    return pd.DataFrame(rows)


def _norm(values: list[float]) -> float:
    finite = [abs(v) for v in values if math.isfinite(v)]
    top = max(finite, default=0.0)
    return 0.0 if top == 0 else top * math.sqrt(sum((v / top) ** 2 for v in finite))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(variable, min_size=1, max_size=4), min_size=1, max_size=6))
def test_aggregate_layers_matches_a_plain_reference(layers):
    frame = _frame(layers)
    out = diagnosis.aggregate_layers(frame)
    assert isinstance(out, pd.DataFrame) and len(out) == len(layers)
    for i, variables in enumerate(layers):
        row = out.iloc[i]
        grads = [v["grad_norm"] for v in variables]
        kernels = [v for v in variables if v["kernel"]]
        assert row["layer"] == f"layer_{i}" and row["position"] == i + 1
        assert row["n_params"] == sum(v["size"] for v in variables)
        assert row["nonfinite_count"] == sum(math.isnan(g) for g in grads)
        if any(math.isnan(g) for g in grads) and all(v["size"] == 1 for v in variables) \
                and all(math.isnan(g) for g in grads):
            assert math.isnan(row["grad_norm"])
        elif row["nonfinite_count"] < row["n_params"]:
            assert row["grad_norm"] == pytest.approx(_norm(grads), rel=1e-12, abs=0)
        assert row["weight_norm"] == pytest.approx(
            _norm([v["weight_norm"] for v in variables]), rel=1e-12, abs=0)
        if kernels:
            assert row["kernel_grad_norm"] == pytest.approx(
                _norm([v["grad_norm"] for v in kernels]), rel=1e-12, abs=0)
            assert row["dead_unit_fraction"] == kernels[0]["dead"]
        else:
            assert math.isnan(row["kernel_grad_norm"])
            assert row["dead_unit_fraction"] == max(v["dead"] for v in variables)
        assert bool(row["connected"]) == any(v["connected"] for v in variables)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(variable, min_size=1, max_size=3), min_size=1, max_size=6),
       st.sampled_from([None, {"vanishing_ratio": 1e-2}]))
def test_a_table_and_a_dataframe_give_the_same_report(layers, overrides):
    frame = _frame(layers)
    a = diagnose(frame, overrides)
    b = diagnose(as_table(frame), overrides)
    assert (a.status, a.score, a.findings) == (b.status, b.score, b.findings)
    assert [str(r) for r in a.recommendations] == [str(r) for r in b.recommendations]
    pd.testing.assert_frame_equal(a.layers, b.layers)
    # Each public step returns the kind it was given.
    t = Thresholds.coerce(overrides)
    assert isinstance(diagnosis.classify_layers(diagnosis.aggregate_layers(frame), t),
                      pd.DataFrame)
    assert isinstance(diagnosis.classify_layers(diagnosis.aggregate_layers(as_table(frame)), t),
                      Table)


def test_report_tables_are_built_once_when_read():
    frame = _frame([[{"kernel": True, "grad_norm": 0.5, "weight_norm": 1.0, "dead": 0.0,
                      "size": 16, "connected": True}]])
    report = diagnose(as_table(frame))
    first = report.layers
    assert isinstance(first, pd.DataFrame) and report.layers is first
    assert isinstance(report.variables, pd.DataFrame)
    assert report.to_dict()["layers"][0]["layer"] == "layer_0"


def test_vanishing_with_nothing_to_compare_with_is_still_explained():
    # Found by the fuzz test above: every depth layer's gradient is exactly 0 (no dead units
    # reported), so "x times the largest" had a 0/0 and the report raised ZeroDivisionError.
    zero = {"kernel": True, "grad_norm": 0.0, "weight_norm": 1.0, "dead": 0.0, "size": 16,
            "connected": True}
    report = diagnose(_frame([[zero], [zero]]))
    assert report.status == "vanishing"
    assert any("no layer judged by its gradient norm gets more than 0" in f
               for f in report.findings)

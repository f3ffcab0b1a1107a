"""core.diagnosis on hand-made statistics tables (no model, no backend)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradhealth import Thresholds, diagnose
from gradhealth.core import diagnosis
from gradhealth.core.stats import tensor_stats


def table(norms, dead=None, nonfinite=None, connected=None) -> pd.DataFrame:
    """One kernel variable per layer with the given gradient norms."""
    rows = []
    for i, n in enumerate(norms):
        g = np.full((4, 4), n / 4.0)  # norm of a 4x4 constant matrix = 4 * value
        if dead is not None and dead[i]:
            g[:, : int(round(4 * dead[i]))] = 0.0
        if nonfinite is not None and nonfinite[i]:
            g[0, 0] = np.nan
        s = tensor_stats(g, np.ones((4, 4)))
        rows.append({"layer": f"l{i + 1}", "variable": "kernel", "path": f"l{i + 1}/kernel",
                     "shape": (4, 4), "size": 16, **s,
                     "connected": True if connected is None else connected[i]})
    return pd.DataFrame(rows)


def test_healthy_network():
    r = diagnose(table([0.5, 0.4, 0.3, 0.6]))
    assert r.status == "healthy"
    assert r.score == 100.0
    assert r.recommendations == []
    assert "healthy" in r.findings[0]


def test_vanishing_by_ratio_to_largest_layer():
    r = diagnose(table([1e-9, 1e-6, 1e-3, 1.0]))
    assert list(r.layers["status"]) == ["vanishing", "vanishing", "healthy", "healthy"]
    assert r.status == "vanishing"
    # decades beyond the ratio threshold (1e-3 x max = 1e-3): 6 and 3
    assert r.layers["decades_beyond"].iloc[0] == pytest.approx(6.0)
    assert r.layers["decades_beyond"].iloc[1] == pytest.approx(3.0)
    expected_credit = [0.5 * max(0, 1 - 6 / 6), 0.5 * (1 - 3 / 6), 1, 1]
    assert r.score == pytest.approx(100 * np.mean(expected_credit), abs=0.05)
    assert "l1" in r.findings[0] and "vanish" in r.findings[0]


def test_vanishing_by_absolute_norm():
    r = diagnose(table([1e-8, 1e-8, 1e-8]))
    assert r.status == "vanishing"


def test_exploding_absolute_and_relative_to_output():
    assert diagnose(table([5e3, 4e3, 3e3])).status == "exploding"
    r = diagnose(table([50.0, 1.0, 0.01]))  # grew 5000x backwards from the output
    assert list(r.layers["status"]) == ["exploding", "healthy", "healthy"]
    assert any(rec.category == "clipping" for rec in r.recommendations)


def test_dead_layer_and_underflow_rule():
    r = diagnose(table([0.3, 0.3, 0.3], dead=[0, 1.0, 0]))
    assert list(r.layers["status"]) == ["healthy", "dead", "healthy"]
    assert r.status == "dead"
    # A layer whose whole gradient underflowed to 0 behind vanishing layers is vanishing.
    r = diagnose(table([0.0, 1e-12, 1.0]))
    assert list(r.layers["status"]) == ["vanishing", "vanishing", "healthy"]
    assert any("underflowed" in f for f in r.findings)


def test_nonfinite_dominates_and_caps_score():
    r = diagnose(table([0.3, 0.3, 0.3], nonfinite=[0, 1, 0]))
    assert r.status == "nonfinite"
    assert r.score <= 50
    assert any(rec.category == "data" for rec in r.recommendations)


def test_unused_layers_are_reported_not_scored():
    r = diagnose(table([0.3, 0.0, 0.3], connected=[True, False, True]))
    assert list(r.layers["status"]) == ["healthy", "unused", "healthy"]
    assert r.score == 100.0
    assert any("no gradient" in f for f in r.findings)


def test_thresholds_change_the_verdict():
    t = table([1e-4, 1.0])
    assert diagnose(t).status == "vanishing"
    assert diagnose(t, Thresholds(vanishing_ratio=1e-5)).status == "healthy"


def test_recommendations_use_context():
    ctx = {"activations": {f"l{i}": "sigmoid" for i in range(1, 4)}, "depth": 30,
           "has_normalization": False, "has_residual": False}
    r = diagnose(table([1e-9, 1e-5, 1.0]), context=ctx)
    cats = [rec.category for rec in r.recommendations]
    assert cats[0] == "activation" and "sigmoid" in r.recommendations[0].action
    assert {"normalization", "residual", "initializer"} <= set(cats)
    assert r.recommendations[0].params == {"activation": "relu"}
    ctx2 = dict(ctx, activations={f"l{i}": "relu" for i in range(1, 4)}, has_normalization=True,
                has_residual=True)
    cats2 = [rec.category for rec in diagnose(table([1e-9, 1e-5, 1.0]), context=ctx2).recommendations]
    assert "activation" not in cats2 and "residual" not in cats2 and "normalization" not in cats2


def test_every_recommendation_has_a_known_category_and_reference():
    ctx = {"activations": {"l1": "relu"}, "initializers": {"l1": "RandomNormal"}}
    for norms, kw in (([5e3, 4e3], {}), ([0.3, 0.3], {"dead": [1, 0]}),
                      ([0.3, 0.3], {"nonfinite": [1, 0]}), ([1e-9, 1.0], {})):
        for rec in diagnose(table(norms, **kw), context=ctx).recommendations:
            assert rec.category in diagnosis.CATEGORIES
            assert rec.reference and rec.reason and rec.action
            assert str(rec).startswith(f"[{rec.category}]")

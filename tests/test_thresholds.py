from __future__ import annotations

import math

import pytest

from gradhealth import Thresholds


def test_defaults_are_consistent_and_serializable():
    t = Thresholds()
    assert t.vanishing_norm < t.exploding_norm
    assert Thresholds(**t.to_dict()) == t


@pytest.mark.parametrize(
    "field,value",
    [("vanishing_ratio", 0), ("vanishing_ratio", 2.0), ("vanishing_norm", -1.0),
     ("exploding_norm", math.inf), ("exploding_ratio", 0.5), ("dead_fraction", 0.0),
     ("dead_fraction", 1.5), ("score_decades", "6"), ("vanishing_norm", True),
     ("vanishing_step", 0.0), ("vanishing_step", math.nan)],
)
def test_invalid_values_name_the_argument_and_value(field, value):
    with pytest.raises(ValueError, match=rf"`{field}`.*Received: {field}="):
        Thresholds(**{field: value})


def test_vanishing_norm_must_be_below_exploding_norm():
    with pytest.raises(ValueError, match="vanishing_norm"):
        Thresholds(vanishing_norm=10.0, exploding_norm=1.0)


def test_coerce():
    assert Thresholds.coerce(None) == Thresholds()
    assert Thresholds.coerce({"dead_fraction": 0.5}).dead_fraction == 0.5
    with pytest.raises(ValueError, match="unknown keys"):
        Thresholds.coerce({"vanish": 1})
    with pytest.raises(TypeError, match="Received: thresholds=3"):
        Thresholds.coerce(3)
    assert Thresholds().replace(exploding_norm=50.0).exploding_norm == 50.0


def test_every_field_is_documented():
    doc = Thresholds.__doc__
    for name in Thresholds().to_dict():
        assert f"{name}:" in doc, name


def test_vanishing_step_changes_the_verdict_on_a_normalized_kernel():
    import numpy as np
    import pandas as pd

    from gradhealth import diagnose
    from gradhealth.core.stats import tensor_stats

    rows = []
    for name, g in (("conv", 1e-6), ("out", 0.1)):
        s = tensor_stats(np.full((4, 4), g / 4), np.full((4, 4), 1.0))
        rows.append({"layer": name, "variable": "kernel", "path": f"{name}/kernel",
                     "shape": (4, 4), "size": 16, **s, "connected": True})
    ctx = {"roles": {"conv": "scale_invariant", "out": "kernel"}}
    stats = pd.DataFrame(rows)
    # ||g||/||W|| = 1e-6 / 4 = 2.5e-7: above the default floor, below a raised one.
    assert diagnose(stats, None, ctx).status == "healthy"
    assert diagnose(stats, {"vanishing_step": 1e-6}, ctx).status == "vanishing"

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
     ("dead_fraction", 1.5), ("score_decades", "6"), ("vanishing_norm", True)],
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

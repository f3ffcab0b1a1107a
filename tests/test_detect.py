"""Explosion detectors (pure NumPy; backend-agnostic)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradhealth.core import detect
from gradhealth.core.detect import (
    GLOBAL,
    Alert,
    ExplosionDetector,
    ExplosionError,
    GrowthDetector,
    NonFiniteDetector,
    SpikeDetector,
    ThresholdDetector,
)


def feed(det, values, start=0):
    return [a for s, v in enumerate(values, start) if (a := det.update(s, v)) is not None]


def test_threshold_fires_once_per_episode_and_rearms():
    det = ThresholdDetector(max_norm=10.0, layer="dense")
    alerts = feed(det, [1, 5, 11, 50, 20, 3, 12])
    assert [a.step for a in alerts] == [2, 6]
    a = alerts[0]
    assert (a.kind, a.layer, a.value, a.threshold) == ("threshold", "dense", 11.0, 10.0)
    assert "dense" in a.message and "11" in a.message and "10" in a.message


def test_threshold_ignores_nonfinite_and_nonfinite_detector_catches_it():
    assert feed(ThresholdDetector(10.0), [math.nan, math.inf]) == []
    alerts = feed(NonFiniteDetector(), [1.0, math.inf, math.nan, 2.0, math.nan])
    assert [(a.step, a.kind) for a in alerts] == [(1, "nonfinite"), (4, "nonfinite")]


def test_growth_detects_geometric_growth_with_the_numbers():
    det = GrowthDetector(factor=10.0, window=5, min_norm=1.0)
    values = [2.0 * 1.7**k for k in range(12)]  # 1.7**5 = 14.2 >= 10
    alerts = feed(det, values)
    assert [a.step for a in alerts] == [5]  # first step with a full window; then stays active
    a = alerts[0]
    assert a.reference == pytest.approx(values[0]) and a.value == pytest.approx(values[5])
    assert "1.7x per step" in a.message


def test_growth_is_quiet_for_slow_growth_and_small_norms():
    assert feed(GrowthDetector(10.0, 5), [1.5**k for k in range(30)]) == []  # 7.6x per 5 steps
    assert feed(GrowthDetector(10.0, 5, min_norm=1.0), [1e-6 * 3**k for k in range(10)]) == []


def test_spike_fires_on_a_jump_after_warmup_only():
    rng = np.random.default_rng(0)
    base = list(10 ** rng.normal(0.3, 0.02, size=30))
    det = SpikeDetector(z_threshold=6.0, warmup=10)
    assert feed(det, base) == []
    alert = det.update(30, 200.0)
    assert alert is not None and alert.kind == "spike" and alert.reference > 6.0
    early = SpikeDetector(warmup=10)
    assert feed(early, [2.0, 2.0, 500.0]) == []  # still warming up


def test_spike_running_statistics_match_numpy_reference():
    values = [1.0, 3.0, 2.0, 8.0, 4.0]
    alpha = 0.3
    det = SpikeDetector(alpha=alpha)
    feed(det, values)
    mean, var = math.log10(values[0]), 0.0
    for v in values[1:]:
        d = math.log10(v) - mean
        mean += alpha * d
        var = (1 - alpha) * (var + alpha * d * d)
    assert det.mean == pytest.approx(mean) and det.var == pytest.approx(var)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.5, 2.0), min_size=20, max_size=60))
def test_no_false_alarms_on_bounded_fluctuations(values):
    """Norms that stay within a factor of 4 of each other never trigger growth or threshold."""
    det = ExplosionDetector(max_norm=1e3)
    for s, v in enumerate(values):
        new = det.update(s, {"a": v}, global_norm=v)
        assert all(a.kind not in ("threshold", "growth") for a in new)


@settings(max_examples=30, deadline=None)
@given(st.floats(1.6, 5.0), st.floats(1.0, 10.0))
def test_exponential_growth_is_caught_before_overflow(rate, start):
    """Any sustained growth >= 1.6x per step raises an alert long before float32 overflow."""
    det = ExplosionDetector()
    norm, step = start, 0
    while not det.alerts:
        det.update(step, global_norm=norm)
        norm *= rate
        step += 1
    assert det.alerts[0].value < 3.4e38 / 1e20


def test_explosion_detector_per_layer_names_layer_and_reset():
    det = ExplosionDetector(max_norm=100.0)
    assert det.update(0, {"dense": 1.0, "out": 2.0}, global_norm=2.2) == []
    new = det.update(1, {"dense": 500.0, "out": 2.0}, global_norm=500.0)
    assert {(a.kind, a.layer) for a in new} == {("threshold", GLOBAL), ("threshold", "dense")}
    assert det.alerts == new
    det.reset()
    assert det.alerts == [] and det.update(2, {"dense": 500.0}, global_norm=500.0)


def test_raise_on_alert_and_alert_dict():
    det = ExplosionDetector(max_norm=1.0, raise_on_alert=True)
    with pytest.raises(ExplosionError) as info:
        det.update(7, global_norm=5.0)
    alert = info.value.alert
    assert isinstance(alert, Alert) and alert.step == 7
    assert set(alert.to_dict()) == {"step", "kind", "layer", "value", "threshold", "reference",
                                    "message"}
    assert str(alert) == alert.message


@pytest.mark.parametrize("make, message", [
    (lambda: ThresholdDetector(max_norm=0), "max_norm=0"),
    (lambda: ThresholdDetector(max_norm=math.inf), "max_norm=inf"),
    (lambda: GrowthDetector(factor=1.0), "factor=1.0"),
    (lambda: GrowthDetector(window=0), "window=0"),
    (lambda: SpikeDetector(alpha=1.5), "alpha=1.5"),
    (lambda: SpikeDetector(warmup=-1), "warmup=-1"),
    (lambda: ExplosionDetector(z_threshold="big"), "z_threshold='big'"),
])
def test_invalid_arguments_name_the_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_documented_defaults_are_exported():
    assert detect.DEFAULT_MAX_NORM == 1e3
    assert detect.DEFAULT_GROWTH_FACTOR ** (1 / detect.DEFAULT_GROWTH_WINDOW) < 1.6
    assert set(detect.KINDS) == {"nonfinite", "threshold", "growth", "spike"}

"""Tests for the notebook-2 self-checks: right answers pass, wrong ones fail with a hint, garbage
gives a Feedback instead of an exception."""

from __future__ import annotations

import numpy as np
import pytest

import gradhealth as gh
from gradhealth.course.exercises import Feedback
from gradhealth.course.exercises import monitoring as ex

GARBAGE = [None, "abc", [1, 2], {}, object(), float("nan"), float("inf"), True, np.array([1.0, 2.0])]


@pytest.fixture(scope="module")
def report():
    """A small sigmoid network whose first layers vanish while its last ones stay healthy."""
    x, y = gh.data.synthetic_classification(n=64, input_dim=16, seed=1)
    model = gh.models.demo_network("sigmoid", depth=10, width=16, input_dim=16, seed=3)
    rep = gh.checkup(model, x, y, loss=gh.models.classification_loss())
    assert {"vanishing", "healthy"} <= set(rep.layers["status"])
    return rep


def test_grad_to_weight(report):
    row = report.layers.iloc[0]
    expected = float(row["grad_norm"]) / float(row["weight_norm"])
    assert ex.check_grad_to_weight(report, row["layer"], expected).correct
    assert ex.check_grad_to_weight(report, row["layer"], expected * 1.005).correct
    wrong = ex.check_grad_to_weight(report, row["layer"], expected * 2)
    assert not wrong.correct and "weight_norm" in wrong.message
    upside_down = ex.check_grad_to_weight(report, row["layer"], 1 / expected)
    assert not upside_down.correct and "upside down" in upside_down.message
    other = report.layers.iloc[-1]
    assert not ex.check_grad_to_weight(report, other["layer"], expected).correct


def test_grad_to_weight_unknown_layer_lists_layers(report):
    fb = ex.check_grad_to_weight(report, "no_such_layer", 1.0)
    assert not fb.correct and "hidden_1" in fb.message


def reference_credit(row, score_decades):
    if row["status"] == "healthy":
        return 1.0
    if row["status"] in ("vanishing", "exploding"):
        return 0.5 * max(0.0, 1.0 - row["decades_beyond"] / score_decades)
    if row["status"] == "dead":
        return 0.5 * (1.0 - row["dead_unit_fraction"])
    return 0.0


def test_layer_credit_follows_documented_formula(report):
    t = report.thresholds
    credits = []
    for _, row in report.layers.iterrows():
        expected = reference_credit(row, t.score_decades)
        credits.append(expected)
        assert ex.check_layer_credit(report, row["layer"], expected).correct
        wrong = ex.check_layer_credit(report, row["layer"], expected + 0.2)
        assert not wrong.correct and "decades" in wrong.message
    assert report.score == round(100 * float(np.mean(credits)), 1)


def test_layer_credit_percentage_gets_specific_hint(report):
    row = report.layers.iloc[-1]
    fb = ex.check_layer_credit(report, row["layer"], 100 * float(row["credit"]))
    assert not fb.correct and "percentage" in fb.message


@pytest.mark.parametrize("overrides", [None, {"vanishing_ratio": 1e-9},
                                       {"vanishing_ratio": 1e-9, "vanishing_norm": 1e-12},
                                       {"vanishing_ratio": 0.5}])
def test_vanishing_count_matches_reference(report, overrides):
    t = gh.Thresholds.coerce(overrides)
    norms = report.layers["grad_norm"].to_numpy(dtype=np.float64)
    dead = report.layers["dead_unit_fraction"].to_numpy() >= t.dead_fraction
    vanishing = ((norms < t.vanishing_norm) | (norms < t.vanishing_ratio * norms.max())) & ~dead
    expected = int(vanishing.sum())
    assert ex.check_vanishing_count(report, overrides, expected).correct
    assert ex.check_vanishing_count(report, t, expected).correct
    wrong = ex.check_vanishing_count(report, overrides, expected + 1)
    assert not wrong.correct and "vanishing_norm" in wrong.message


def test_invalid_thresholds_give_feedback(report):
    for bad in ({"vanishing_ratio": -1}, {"nonsense": 1}, "strict", 3):
        fb = ex.check_vanishing_count(report, bad, 3)
        assert isinstance(fb, Feedback) and not fb.correct and "thresholds" in fb.message.lower()


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_answers_give_feedback(garbage, report):
    layer = report.layers["layer"].iloc[0]
    for fb in (ex.check_grad_to_weight(report, layer, garbage),
               ex.check_layer_credit(report, layer, garbage),
               ex.check_vanishing_count(report, None, garbage)):
        assert isinstance(fb, Feedback) and not fb.correct and fb.message


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_reports_give_feedback(garbage):
    for fb in (ex.check_grad_to_weight(garbage, "hidden_1", 0.1),
               ex.check_layer_credit(garbage, "hidden_1", 0.5),
               ex.check_vanishing_count(garbage, None, 3)):
        assert isinstance(fb, Feedback) and not fb.correct and "HealthReport" in fb.message

"""Tests for the notebook-1 self-checks: right answers pass, wrong ones fail with a hint, garbage
gives a Feedback instead of an exception."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradhealth as gh
from gradhealth.course.exercises import Feedback
from gradhealth.course.exercises import vanishing as ex

GARBAGE = [None, "abc", [1, 2], {}, object(), float("nan"), float("inf"), True, np.array([1.0, 2.0])]


@pytest.fixture(scope="module")
def report():
    x, y = gh.data.synthetic_classification(n=64, input_dim=16, seed=1)
    model = gh.models.demo_network("sigmoid", depth=8, width=16, input_dim=16, seed=3)
    return gh.checkup(model, x, y, loss=gh.models.classification_loss())


def test_sigmoid_max_derivative_matches_finite_differences():
    z = np.linspace(-6, 6, 12001)
    s = 1 / (1 + np.exp(-z))
    numeric = np.gradient(s, z)
    assert math.isclose(ex.sigmoid_max_derivative(), numeric.max(), rel_tol=1e-6)
    assert abs(z[numeric.argmax()]) < 1e-9


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=ex.MAX_LAYERS))
def test_decay_bound_right_answer_passes_and_wrong_fails(n):
    assert ex.check_decay_bound(n, 0.25 ** n).correct
    wrong = ex.check_decay_bound(n, 0.25 ** (n + 1))
    assert not wrong.correct and "0.25" in wrong.message


def test_decay_bound_inverse_gets_specific_hint():
    fb = ex.check_decay_bound(10, 4.0 ** 10)
    assert not fb.correct and "inverse" in fb.message


@pytest.mark.parametrize("factor", [1e-1, 1e-3, 1e-6, 1e-9, 0.25 ** 5, 0.5])
def test_layers_to_shrink_matches_reference(factor):
    reference = next(n for n in range(200) if 0.25 ** n <= factor)
    assert ex.check_layers_to_shrink(factor, reference).correct
    assert ex.check_layers_to_shrink(factor, float(reference)).correct
    for wrong in (reference - 1, reference + 1):
        fb = ex.check_layers_to_shrink(factor, wrong)
        assert not fb.correct and "Hint" in fb.message


def test_layers_to_shrink_exact_power_is_not_off_by_one():
    assert ex.check_layers_to_shrink(0.25 ** 7, 7).correct


def test_first_to_last_ratio(report):
    norms = report.layers["grad_norm"].to_numpy(dtype=np.float64)
    expected = norms[0] / norms[-1]
    assert ex.check_first_to_last_ratio(report, expected).correct
    assert ex.check_first_to_last_ratio(report, expected * 1.02).correct  # rounded answer
    fb = ex.check_first_to_last_ratio(report, expected * 10)
    assert not fb.correct and "grad_norm" in fb.message
    inverted = ex.check_first_to_last_ratio(report, 1 / expected)
    assert not inverted.correct and "inverse" in inverted.message


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_answers_give_feedback(garbage, report):
    for fb in (ex.check_decay_bound(5, garbage), ex.check_layers_to_shrink(1e-3, garbage),
               ex.check_first_to_last_ratio(report, garbage)):
        assert isinstance(fb, Feedback) and not fb.correct and fb.message


@pytest.mark.parametrize("garbage", GARBAGE + [-1, 0, 2.0, ex.MAX_LAYERS + 1])
def test_garbage_problem_arguments_give_feedback(garbage):
    for fb in (ex.check_decay_bound(garbage, 0.5), ex.check_layers_to_shrink(garbage, 3),
               ex.check_first_to_last_ratio(garbage, 1e-3)):
        assert isinstance(fb, Feedback) and not fb.correct and fb.message

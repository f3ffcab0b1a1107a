"""Tests for the notebook-6 self-checks: right answers pass, wrong ones fail with a reason."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from gradhealth.course.exercises import Feedback, solutions


def test_treatment_order():
    good = ["activation", "initializer", "normalization", "learning_rate", "clipping"]
    assert solutions.check_treatment_order(good)
    bad = solutions.check_treatment_order(["clipping", "activation"])
    assert not bad and "Expected order" in bad.message
    for malformed in ("activation", [], ["activation", "activation"], ["surgery"], None, 3):
        fb = solutions.check_treatment_order(malformed)
        assert isinstance(fb, Feedback) and not fb


@pytest.mark.parametrize("activation, right, wrong", [
    ("relu", "he_normal", "glorot_uniform"), ("selu", "lecun_normal", "he_normal"),
    ("sigmoid", "glorot_uniform", "he_normal")])
def test_matched_initializer(activation, right, wrong):
    assert solutions.check_matched_initializer(activation, right)
    assert solutions.check_matched_initializer(activation, right.upper().replace("_", "-"))
    assert not solutions.check_matched_initializer(activation, wrong)
    assert not solutions.check_matched_initializer(activation, None)


@pytest.mark.parametrize("norm, threshold", [(50.0, 5.0), (0.5, 5.0), (5.0, 5.0)])
def test_clipped_norm(norm, threshold):
    expected = min(norm, threshold)
    assert solutions.clipped_global_norm(norm, threshold) == expected
    assert solutions.check_clipped_norm(norm, threshold, expected)
    assert not solutions.check_clipped_norm(norm, threshold, expected * 1.1 + 0.1)
    assert not solutions.check_clipped_norm(norm, threshold, "five")


@dataclass
class _Comparison:
    frame: pd.DataFrame

    def table(self):
        return self.frame

    def best(self):
        return str(self.frame.sort_values("test_accuracy").iloc[-1]["optimizer"])


def test_best_optimizer():
    cmp = _Comparison(pd.DataFrame({"optimizer": ["sgd", "adam"], "test_accuracy": [0.2, 0.8]}))
    assert solutions.check_best_optimizer(cmp, "adam")
    assert not solutions.check_best_optimizer(cmp, "sgd")
    assert "not in the table" in solutions.check_best_optimizer(cmp, "lion").message


@dataclass
class _Report:
    status: str


@dataclass
class _Result:
    after: _Report
    accuracy: float


def test_treatment_verified():
    result = _Result(_Report("healthy"), 0.9312)
    assert solutions.check_treatment_verified(result, "healthy", 0.93)
    assert not solutions.check_treatment_verified(result, "vanishing", 0.93)
    assert not solutions.check_treatment_verified(result, "healthy", 0.5)
    assert not solutions.check_treatment_verified(result, "healthy", "high")

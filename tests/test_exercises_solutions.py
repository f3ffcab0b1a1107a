"""Tests for the notebook-6 self-checks: right answers pass, wrong ones fail with a reason."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from gradhealth.course.exercises import Feedback, solutions

GOOD_ORDER = ["activation", "initializer", "normalization", "learning_rate", "clipping"]


def test_treatment_order_accepts_the_causal_order_only():
    assert solutions.check_treatment_order(GOOD_ORDER)
    assert solutions.check_treatment_order(", ".join(GOOD_ORDER))          # one string
    assert solutions.check_treatment_order([g.upper() for g in GOOD_ORDER])  # any case
    swapped = GOOD_ORDER[:3] + ["clipping", "learning_rate"]
    bad = solutions.check_treatment_order(swapped)
    assert not bad and bad.answered
    # A wrong attempt names one misplaced pair, never the whole order.
    assert str(GOOD_ORDER) not in bad.message and ", ".join(GOOD_ORDER) not in bad.message


def test_treatment_order_rejects_incomplete_answers():
    fb = solutions.check_treatment_order(["activation", "clipping"])
    assert not fb and "leaves out" in fb.message
    for malformed in ("activation", ["activation", "activation"], ["surgery"], 3, [1, 2]):
        fb = solutions.check_treatment_order(malformed)
        assert isinstance(fb, Feedback) and not fb and fb.answered
    for empty in (None, [], "", "  "):
        fb = solutions.check_treatment_order(empty)
        assert not fb and not fb.answered and "not answered yet" in fb.message


@pytest.mark.parametrize("activation, right, wrong", [
    ("relu", "he_normal", "glorot_uniform"), ("selu", "lecun_normal", "he_normal"),
    ("sigmoid", "glorot_uniform", "he_normal")])
def test_matched_initializer(activation, right, wrong):
    assert solutions.check_matched_initializer(activation, right)
    assert solutions.check_matched_initializer(activation, right.upper().replace("_", "-"))
    assert not solutions.check_matched_initializer(activation, wrong)
    assert not solutions.check_matched_initializer(activation, None).answered
    assert solutions.check_matched_initializer(activation, [right])


def test_matched_initializer_tanh_is_glorot_everywhere():
    """Issue 11: notebook 6's checker once wanted LeCun for tanh while notebooks 4 and 5 said
    Glorot; both checkers now read gradhealth.core.knowledge."""
    from gradhealth.course.exercises import initialization

    assert solutions.check_matched_initializer("tanh", "glorot_uniform")
    assert not solutions.check_matched_initializer("tanh", "lecun_normal")
    assert initialization.check_pairing("tanh", "glorot_uniform")
    assert not initialization.check_pairing("tanh", "lecun_normal")


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
    assert solutions.check_best_optimizer(cmp, ["adam"])          # a one-element list
    assert not solutions.check_best_optimizer(cmp, ["adam", "sgd"])
    assert not solutions.check_best_optimizer(cmp, None).answered


@dataclass
class _Report:
    status: str


@dataclass
class _Result:
    after: _Report
    accuracy: float


def test_treatment_verified():
    result = _Result(_Report("healthy"), 0.9312)
    assert solutions.check_treatment_verified(result, ("healthy", 0.93))
    assert solutions.check_treatment_verified(result, ["healthy", "0.93"])
    assert not solutions.check_treatment_verified(result, ("vanishing", 0.93))
    assert not solutions.check_treatment_verified(result, ("healthy", 0.5))
    assert not solutions.check_treatment_verified(result, ("healthy", "high"))
    assert not solutions.check_treatment_verified(result, None).answered

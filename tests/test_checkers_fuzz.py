"""Every exercise check in ``gradhealth.course.exercises`` returns feedback for any answer.

The checks are called by students with half-finished answers in a live class: text, lists, None,
NaN, infinities, huge integers, arrays, dicts. Whatever comes in, a check must return a
:class:`Feedback` with a message (never raise), report ``None``/empty answers as "not answered
yet", and the right answer must stay accepted as a number, a numeric string and a one-element
list wherever the question asks for one number.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradhealth as gh
from gradhealth.course.exercises import (
    Feedback,
    activations,
    explosion,
    initialization,
    monitoring,
    solutions,
    vanishing,
)
from gradhealth.course.exercises._feedback import NOT_ANSWERED

MODULES = (vanishing, monitoring, explosion, activations, initialization, solutions)


@dataclass
class _Comparison:
    """The two methods ``check_best_optimizer`` reads from an OptimizerComparison."""

    frame: pd.DataFrame

    def table(self) -> pd.DataFrame:
        return self.frame

    def best(self) -> str:
        return str(self.frame.sort_values("test_accuracy").iloc[-1]["optimizer"])


@dataclass
class _After:
    status: str


@dataclass
class _Result:
    after: _After
    accuracy: float


@pytest.fixture(scope="module")
def report():
    x, y = gh.data.synthetic_classification(n=64, input_dim=16, seed=1)
    model = gh.models.demo_network("sigmoid", depth=6, width=16, input_dim=16, seed=3)
    return gh.checkup(model, x, y, loss=gh.models.classification_loss())


@pytest.fixture(scope="module")
def checks(report):
    """Every check_* with its non-answer arguments bound: name -> (call(answer), right answer)."""
    row = report.layers.iloc[0]
    cmp = _Comparison(pd.DataFrame({"optimizer": ["sgd", "adam"], "test_accuracy": [0.2, 0.8]}))
    result = _Result(_After("healthy"), 0.93)
    thresholds = gh.Thresholds(vanishing_ratio=1e-6, vanishing_norm=1e-10)
    count = int((gh.diagnose(report.variables, thresholds, report.context).layers["status"]
                 == "vanishing").sum())
    norms = report.layers["grad_norm"].to_numpy(dtype=float)
    return {
        "vanishing.check_decay_bound": (lambda a: vanishing.check_decay_bound(10, a), 0.25 ** 10),
        "vanishing.check_layers_to_shrink": (lambda a: vanishing.check_layers_to_shrink(1e-6, a), 10),
        "vanishing.check_first_to_last_ratio": (
            lambda a: vanishing.check_first_to_last_ratio(report, a), norms[0] / norms[-1]),
        "monitoring.check_grad_to_weight": (
            lambda a: monitoring.check_grad_to_weight(report, row["layer"], a),
            float(row["grad_norm"]) / float(row["weight_norm"])),
        "monitoring.check_layer_credit": (
            lambda a: monitoring.check_layer_credit(report, row["layer"], a), float(row["credit"])),
        "monitoring.check_vanishing_count": (
            lambda a: monitoring.check_vanishing_count(report, thresholds, a), count),
        "explosion.check_global_clip": (explosion.check_global_clip, 1.6),
        "explosion.check_agc_limit": (lambda a: explosion.check_agc_limit(a, weight_norm=0.5), 0.005),
        "explosion.check_warning_lead": (lambda a: explosion.check_warning_lead(a, 4, 7), 3),
        "activations.check_max_derivative": (
            lambda a: activations.check_max_derivative("sigmoid", a), 0.25),
        "activations.check_dead_fraction": (activations.check_dead_fraction, 0.5),
        "activations.check_recommendation": (
            lambda a: activations.check_recommendation(a, depth=3, task="binary"), None),
        "initialization.check_he_std": (lambda a: initialization.check_he_std(512, a), 0.0625),
        "initialization.check_glorot_variance": (
            lambda a: initialization.check_glorot_variance(300, 100, a), 0.005),
        "initialization.check_lsuv_scale": (lambda a: initialization.check_lsuv_scale(4.0, a), 0.5),
        "initialization.check_pairing": (lambda a: initialization.check_pairing("selu", a),
                                         "lecun_normal"),
        "solutions.check_treatment_order": (solutions.check_treatment_order,
                                            ["activation", "initializer", "normalization",
                                             "learning_rate", "clipping"]),
        "solutions.check_matched_initializer": (
            lambda a: solutions.check_matched_initializer("relu", a), "he_normal"),
        "solutions.check_clipped_norm": (lambda a: solutions.check_clipped_norm(50.0, 5.0, a), 5.0),
        "solutions.check_best_optimizer": (lambda a: solutions.check_best_optimizer(cmp, a), "adam"),
        "solutions.check_treatment_verified": (
            lambda a: solutions.check_treatment_verified(result, a), ("healthy", 0.93)),
    }


def test_the_fuzz_covers_every_check(checks):
    public = {f"{m.__name__.rsplit('.', 1)[-1]}.{name}" for m in MODULES
              for name, fn in inspect.getmembers(m, inspect.isfunction)
              if name.startswith("check_") and fn.__module__ == m.__name__}
    assert public == set(checks)


def _feedback_ok(fb: object) -> None:
    assert isinstance(fb, Feedback)
    assert isinstance(fb.message, str) and fb.message
    str(fb), fb._repr_html_()  # both renderings work


ANSWERS = st.one_of(
    st.none(), st.text(max_size=40), st.integers(), st.integers(min_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.lists(st.one_of(st.text(max_size=8), st.floats(), st.integers()), max_size=6),
    st.tuples(st.text(max_size=8), st.floats()),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    st.just(float("inf")), st.just(-float("inf")), st.just(float("nan")), st.just(10**400),
    st.just(np.array([1.0, 2.0])), st.just(np.float32(0.5)), st.just(object()), st.just(...),
    st.just("1e999"), st.just("nan"), st.just([None]), st.just([[]]), st.just(pd.DataFrame()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=ANSWERS)
def test_every_check_returns_feedback_for_any_answer(checks, answer):
    for name, (check, _) in checks.items():
        try:
            fb = check(answer)
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{name}({answer!r}) raised {type(e).__name__}: {e}")
        _feedback_ok(fb)


@pytest.mark.parametrize("empty", [None, "", "   ", [], (), ...])
def test_unanswered_is_reported_as_such(checks, empty):
    for name, (check, _) in checks.items():
        fb = check(empty)
        assert not fb.correct and not fb.answered, name
        assert NOT_ANSWERED in fb.message and "not answered yet" in str(fb), name


def test_right_answers_pass_in_every_accepted_form(checks):
    for name, (check, right) in checks.items():
        if right is None:
            continue
        assert check(right), name
        if isinstance(right, (int, float, np.floating)) and not isinstance(right, bool):
            assert check(str(float(right))), f"{name} rejects the numeric string of {right!r}"
            assert check([right]), f"{name} rejects a one-element list"
            assert check(np.float64(right)), f"{name} rejects a NumPy scalar"


def test_wrong_numeric_answers_never_reveal_the_value(checks):
    for name, (check, right) in checks.items():
        if not isinstance(right, (float, np.floating)) or right == 0:
            continue
        wrong = right * 3.7
        fb = check(wrong)
        assert not fb and fb.answered, name
        message = fb.message.replace(f"{wrong:.4g}", "").replace(f"{wrong:.3g}", "")
        for shown in {f"{right:.4g}", f"{right:g}", f"{right:.3g}"}:
            assert not re.search(rf"(?<![\d.]){re.escape(shown)}(?![\d])", message), (
                f"{name} shows the answer {shown} after a wrong try: {fb.message}")


def test_huge_and_non_finite_numbers_are_rejected_with_a_hint():
    for answer in (10**400, float("inf"), float("nan"), "1e999", "-inf"):
        fb = initialization.check_he_std(512, answer)
        assert not fb and fb.answered and "finite number" in fb.message
    assert math.isclose(0.0625, (2 / 512) ** 0.5)

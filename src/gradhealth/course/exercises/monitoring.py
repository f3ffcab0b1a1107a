"""Self-checks for notebook 2, "Gradient Health Monitoring".

Every check takes the :class:`~gradhealth.HealthReport` the student worked from and their answer,
recomputes the expected value with the library, and returns a
:class:`~gradhealth.course.exercises.Feedback` saying whether the answer is right and why, or giving a
hint. Checks never raise on a malformed answer or report: the feedback says what was expected.

Example:
    >>> from gradhealth.course.exercises import monitoring
    >>> row = report.layers.iloc[0]
    >>> monitoring.check_grad_to_weight(report, row["layer"], row["grad_norm"] / row["weight_norm"])
    ✅ Correct (grad-to-weight ratio): ...

References:
    Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward neural
    networks (per-layer gradient statistics as a diagnostic).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from gradhealth.core.thresholds import Thresholds
from gradhealth.course.exercises._feedback import (
    Feedback,
    as_number,
    as_whole_number,
    check_close,
    is_unanswered,
    not_answered,
    show,
)
from gradhealth.diagnosis import diagnose

__all__ = ["CREDIT_TOLERANCE", "READ_TOLERANCE", "check_grad_to_weight", "check_layer_credit",
           "check_vanishing_count"]

READ_TOLERANCE: float = 0.01
"""Relative tolerance for values computed from a report's columns: 1% accepts an answer rounded
to three significant digits and rejects one taken from the wrong layer or column."""

CREDIT_TOLERANCE: float = 0.01
"""Absolute tolerance for a layer's score credit (a number in [0, 1]): two decimals suffice."""


def _layers(report: Any) -> pd.DataFrame | None:
    layers = getattr(report, "layers", None)
    if not isinstance(layers, pd.DataFrame) or "layer" not in layers:
        return None
    return layers


def _row(report: Any, layer: Any, name: str) -> tuple[pd.Series | None, Feedback | None]:
    layers = _layers(report)
    if layers is None:
        return None, Feedback(False, "pass the HealthReport returned by gh.checkup(...) as "
                              f"`report` (got {type(report).__name__}).", name)
    names = [str(n) for n in layers["layer"]]
    if not isinstance(layer, str) or layer not in names:
        shown = names if len(names) <= 6 else names[:3] + ["..."] + names[-2:]
        return None, Feedback(False, f"this report has no layer {show(layer)}; its layers are "
                              f"{shown}.", name)
    return layers.iloc[names.index(layer)], None


def check_grad_to_weight(report: Any, layer: str, answer: Any) -> Feedback:
    """Exercise 1: a layer's gradient-to-weight ratio, ``grad_norm / weight_norm``.

    The ratio says how large one plain SGD step is relative to the weights: with learning rate
    ``lr`` the weights change by a fraction of about ``lr * grad_to_weight`` per step.

    Args:
        report: The :class:`~gradhealth.HealthReport` the answer was computed from.
        layer: The layer's name, e.g. ``"hidden_1"``.
        answer: The student's ratio.

    Returns:
        Feedback: correct within 1% of ``grad_norm / weight_norm`` of that layer.

    References:
        Karpathy, CS231n course notes, "Neural Networks Part 3: Learning and Evaluation"
        (the ratio of update size to weight size as a health check, about 1e-3 per step).
    """
    name = "grad-to-weight ratio"
    row, problem = _row(report, layer, name)
    if problem is not None:
        return problem
    grad, weight = float(row["grad_norm"]), float(row["weight_norm"])
    if not (math.isfinite(grad) and math.isfinite(weight)) or weight <= 0:
        return Feedback(False, f"layer {layer!r} has no finite gradient or a zero weight norm, so "
                        "its ratio is undefined; pick another layer.", name)
    expected = grad / weight
    if is_unanswered(answer):
        return not_answered(name)
    value = as_number(answer)
    if value is None:
        return Feedback(False, f"expected a number, got {show(answer)}. Hint: divide the layer's "
                        "grad_norm by its weight_norm.", name)
    if value > 0 and expected > 0 and not math.isclose(
        value, expected, rel_tol=READ_TOLERANCE
    ) and math.isclose(value, 1.0 / expected, rel_tol=READ_TOLERANCE):
        return Feedback(False, f"{value:.3g} is upside down (weight_norm / grad_norm). Hint: the "
                        "gradient goes on top.", name)
    return check_close(
        name, value, expected, READ_TOLERANCE,
        why=f"one SGD step with learning rate lr changes the weights of {layer!r} by about "
            f"lr x {expected:.3g} of their size (a common rule of thumb aims near 1e-3 per step: "
            "much less and the layer barely learns, much more and each step rewrites it).",
        hint=f"use the 'grad_norm' and 'weight_norm' columns of the row where layer == {layer!r} "
             "(grad_norm / weight_norm).",
    )


def check_layer_credit(report: Any, layer: str, answer: Any) -> Feedback:
    """Exercise 2: the credit a layer earns in the health score.

    The score is ``100 * mean(credit)`` over the layers; a healthy layer earns 1, a vanishing or
    exploding one ``0.5 * max(0, 1 - decades_beyond / score_decades)``, a dead one ``0.5 * (1 -
    dead_unit_fraction)``, a non-finite one 0 (see
    :func:`gradhealth.core.diagnosis.classify_layers`).

    Args:
        report: The :class:`~gradhealth.HealthReport` the answer was computed from.
        layer: The layer's name.
        answer: The student's credit, a number in [0, 1].

    Returns:
        Feedback: correct within 0.01 of the credit the diagnosis gave that layer.
    """
    name = "layer credit"
    row, problem = _row(report, layer, name)
    if problem is not None:
        return problem
    if "credit" not in row.index or "status" not in row.index:
        return Feedback(False, "this report has no 'credit'/'status' columns; pass a report "
                        "from gh.checkup(...).", name)
    expected = float(row["credit"])
    status = str(row["status"])
    if is_unanswered(answer):
        return not_answered(name)
    value = as_number(answer)
    if value is None:
        return Feedback(False, f"expected a number in [0, 1], got {show(answer)}. Hint: look up "
                        "the layer's status and decades_beyond, then apply the credit table.", name)
    if value > 1 and math.isclose(value / 100, expected, abs_tol=CREDIT_TOLERANCE):
        return Feedback(False, f"{value:g} looks like a percentage; credit is a fraction in "
                        "[0, 1] (the score multiplies the mean credit by 100).", name)
    decades = float(row.get("decades_beyond", 0.0))
    thresholds = getattr(report, "thresholds", Thresholds())
    rule = {
        "healthy": "a healthy layer earns full credit, 1",
        "vanishing": f"{status}: 0.5 * max(0, 1 - {decades:.4g} / {thresholds.score_decades:g})",
        "exploding": f"{status}: 0.5 * max(0, 1 - {decades:.4g} / {thresholds.score_decades:g})",
        "dead": f"dead: 0.5 * (1 - {float(row.get('dead_unit_fraction', 0.0)):.3g})",
        "nonfinite": "a layer with NaN/inf gradients earns 0",
    }.get(status, f"status {status!r} earns no credit")
    if abs(value - expected) <= CREDIT_TOLERANCE:
        return Feedback(True, f"{value:.3g} — {rule} = {expected:.3g}.", name)
    return Feedback(False, f"{value:.3g} is not right. Hint: {layer!r} is {status} and "
                    f"lies {decades:.3g} decades past its threshold (column 'decades_beyond'); "
                    "a vanishing/exploding layer earns 0.5 * max(0, 1 - decades_beyond / "
                    f"{thresholds.score_decades:g}).", name)


def check_vanishing_count(report: Any, thresholds: Any, answer: Any) -> Feedback:
    """Exercise 3: how many layers are vanishing when the report is re-diagnosed with ``thresholds``.

    Args:
        report: The :class:`~gradhealth.HealthReport` to re-diagnose (its per-variable
            statistics are reused, no new gradients are computed).
        thresholds: A :class:`~gradhealth.Thresholds` or a dict of overrides.
        answer: The student's count of layers with status ``"vanishing"``.

    Returns:
        Feedback: correct when ``answer`` equals the count from
        ``gh.diagnose(report.variables, thresholds, report.context)``.
    """
    name = "vanishing count"
    variables = getattr(report, "variables", None)
    if not isinstance(variables, pd.DataFrame) or _layers(report) is None:
        return Feedback(False, "pass the HealthReport returned by gh.checkup(...) as `report` "
                        f"(got {type(report).__name__}).", name)
    try:
        t = Thresholds.coerce(thresholds)
    except (TypeError, ValueError, AttributeError) as e:
        return Feedback(False, f"these thresholds are not valid: {e}", name)
    rediagnosed = diagnose(variables, t, getattr(report, "context", None) or {})
    status = rediagnosed.layers["status"]
    expected = int((status == "vanishing").sum())
    before = int((report.layers["status"] == "vanishing").sum())
    if is_unanswered(answer):
        return not_answered(name)
    count = as_whole_number(answer)
    if count is None:
        return Feedback(False, f"expected a whole number of layers, got {show(answer)}.", name)
    if count == expected:
        return Feedback(True, f"{expected} layers are vanishing with vanishing_ratio="
                        f"{t.vanishing_ratio:g} and vanishing_norm={t.vanishing_norm:g} "
                        f"({before} with the report's own thresholds): a layer is vanishing when "
                        "its norm is below EITHER limit, so loosening one alone may change "
                        "nothing.", name)
    return Feedback(False, f"{count} is not right. Hint: a layer is vanishing when its "
                    f"grad_norm < {t.vanishing_norm:g} (vanishing_norm) OR grad_norm < "
                    f"{t.vanishing_ratio:g} x the largest layer norm (vanishing_ratio); count the "
                    "rows of gh.diagnose(report.variables, thresholds, report.context).layers "
                    "whose status is 'vanishing'.", name)

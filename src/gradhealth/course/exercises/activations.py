"""Self-checks for notebook 4, "Activation Functions Analysis".

Each check computes the expected answer itself (from the measured catalog or the stated rules)
and returns a :class:`~gradhealth.course.exercises.Feedback`; a malformed answer gets feedback, never
an exception.

Example:
    >>> from gradhealth.course.exercises import activations as ex
    >>> print(ex.check_max_derivative("tanh", 1.0))
    ✅ Correct (max derivative of tanh): 1 — ...

References:
    Glorot & Bengio (2010); Lu et al. (2019), "Dying ReLU and Initialization".
"""

from __future__ import annotations

from typing import Any

from gradhealth.course.exercises._feedback import (
    Feedback,
    as_name,
    as_number,
    check_close,
    is_unanswered,
    not_answered,
    show,
)
from gradhealth.init.activations import properties, recommend, resolve_name

__all__ = ["MEASURED_TOLERANCE", "check_dead_fraction", "check_max_derivative",
           "check_recommendation"]

MEASURED_TOLERANCE: float = 0.02
"""Relative tolerance for a number read off a plot or the catalog: 2% accepts two significant
digits (0.25, 1.13) and rejects the neighbouring activations' values."""


def _catalog_name(activation: Any) -> str | None:
    """The catalog's name for ``activation`` (any case, aliases, a one-element list), or None."""
    name = as_name(activation)
    if name is None:
        return None
    try:
        return resolve_name(name)
    except ValueError:
        return None


def check_max_derivative(activation: str, answer: Any) -> Feedback:
    """The largest value of ``activation``'s derivative (read from the catalog or the plot).

    Args:
        activation: A catalog name.
        answer: The student's number.

    Returns:
        Feedback.
    """
    name = _catalog_name(activation)
    if name is None:
        return Feedback(False, f"{show(activation)} is not an activation in the catalog.",
                        "max derivative")
    p = properties(name)
    return check_close(
        f"max derivative of {name}", answer, p["max_derivative"], MEASURED_TOLERANCE,
        why=f"{name}' peaks at {p['max_derivative']:.3f} ({p['max_derivative_at']}); below 1 "
            "every layer can only shrink the gradient.",
        hint="Look at the right-hand plot (the derivatives) or the `max_derivative` column.",
    )


def check_dead_fraction(answer: Any) -> Feedback:
    """The fraction of standard-normal pre-activations where ReLU passes exactly no gradient.

    Args:
        answer: The student's fraction (0-1); a percentage gets a specific hint.

    Returns:
        Feedback.
    """
    exercise = "ReLU zero-gradient fraction"
    expected = properties("relu")["zero_gradient_fraction"]
    value = as_number(answer)
    if value is not None and value > 1 and abs(value / 100 - expected) <= MEASURED_TOLERANCE:
        return Feedback(False, f"{value:g} looks like a percentage; give a fraction between 0 "
                        "and 1.", exercise)
    return check_close(
        exercise, answer, expected, MEASURED_TOLERANCE,
        why="relu'(x) = 0 for every x < 0, i.e. half of a zero-mean Gaussian input: a unit whose "
            "inputs all fall there is 'dead' and never recovers.",
        hint="Where is relu'(x) exactly zero, and how much of N(0, 1) lies there?",
    )


def check_recommendation(answer: Any, depth: int, normalization: str | None = None,
                         task: str = "multiclass", priority: str = "accuracy",
                         table: Any = None) -> Feedback:
    """The top hidden activation :func:`gradhealth.init.activations.recommend` gives for a scenario.

    Args:
        answer: The student's activation name (a one-element list is accepted).
        depth: Hidden layers of the scenario.
        normalization: ``None``, ``"batch"`` or ``"layer"``.
        task: ``"multiclass"``, ``"binary"`` or ``"regression"``.
        priority: ``"accuracy"`` (default: cost ignored, so the answer does not depend on the
            machine), ``"balanced"`` or ``"speed"``.
        table: The catalog table the notebook used (makes the answer repeatable).

    Returns:
        Feedback.
    """
    exercise = f"best activation, depth {depth}, normalization={normalization}"
    if is_unanswered(answer):
        return not_answered(exercise)
    if isinstance(answer, (list, tuple)) and len(answer) > 1:
        return Feedback(False, f"give one activation name, not {len(answer)}: which one ranks "
                        "first?", exercise)
    name = _catalog_name(answer)
    if name is None:
        return Feedback(False, f"{show(answer)} is not an activation in the catalog; give a "
                        "name such as those in the catalog table's index.", exercise)
    try:
        ranked = recommend(depth=depth, task=task, normalization=normalization,
                           priority=priority, table=table)
    except (TypeError, ValueError) as e:
        return Feedback(False, f"this scenario cannot be ranked: {e}", exercise)
    hidden = ranked[ranked["role"] == "hidden"]
    best = hidden.iloc[0]
    if name == best["activation"]:
        return Feedback(True, f"{name}: {best['reason']}", exercise)
    mine = hidden[hidden["activation"] == name]
    if mine.empty:
        return Feedback(False, f"{name} is not ranked as a hidden activation in this scenario.",
                        exercise)
    row = mine.iloc[0]
    return Feedback(False, f"{name} ranks {int(row['rank'])} ({row['reason']}). Which rule "
                           "hurts it in this scenario?", exercise)

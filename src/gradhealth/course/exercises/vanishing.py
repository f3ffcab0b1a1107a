"""Self-checks for notebook 1, "Vanishing Gradients Demonstration".

Every check takes the student's answer (and, where the answer depends on a measurement, the
:class:`~gradhealth.HealthReport` it was read from), computes the expected value itself, and
returns a :class:`~gradhealth.course.exercises.Feedback` saying whether the answer is right and why, or
giving a hint. Checks never raise on a malformed answer: the feedback says what was expected.

Example:
    >>> from gradhealth.course.exercises import vanishing
    >>> print(vanishing.check_decay_bound(10, 0.25 ** 10))
    ✅ Correct (decay bound): 9.537e-07 — ...

References:
    Hochreiter 1991, Untersuchungen zu dynamischen neuronalen Netzen; Bengio, Simard & Frasconi
    1994, Learning long-term dependencies with gradient descent is difficult.
"""

from __future__ import annotations

import math
from typing import Any

from gradhealth.course.exercises._feedback import (
    Feedback,
    as_number,
    as_whole_number,
    check_close,
    is_unanswered,
    not_answered,
    show,
)

__all__ = ["MAX_LAYERS", "MEASURED_TOLERANCE", "NUMERIC_TOLERANCE", "check_decay_bound",
           "check_first_to_last_ratio", "check_layers_to_shrink", "sigmoid_max_derivative"]

NUMERIC_TOLERANCE: float = 1e-6
"""Relative tolerance for answers computed exactly (powers of 0.25): float64 round-off only."""

MEASURED_TOLERANCE: float = 0.05
"""Relative tolerance for answers read from a report: 5% accepts a value rounded to two
significant digits (e.g. ``5.2e-19`` for ``5.2029e-19``) and rejects a wrong layer or an inverted
ratio, which are off by orders of magnitude."""

MAX_LAYERS: int = 500
"""Largest layer count the checks accept: 0.25**500 ~ 1e-301 is still a normal float64 (the
smallest is 2.2e-308); a few dozen more layers and the bound underflows to exactly 0."""


def sigmoid_max_derivative() -> float:
    """The largest value of the sigmoid's derivative, computed from its definition.

    ``sigma'(z) = sigma(z) * (1 - sigma(z))`` is largest where ``sigma(z) = 1/2``, i.e. at
    ``z = 0``, where it equals ``1/2 * 1/2 = 0.25``.

    Returns:
        ``sigma'(0)`` as a float (0.25).
    """
    s = 1.0 / (1.0 + math.exp(-0.0))
    return s * (1.0 - s)


def _layer_count(value: Any) -> int | None:
    return as_whole_number(value, MAX_LAYERS)


def check_decay_bound(n_layers: int, answer: Any) -> Feedback:
    """Exercise 1: the largest factor by which ``n_layers`` sigmoid layers can scale a gradient.

    Backpropagation through one sigmoid multiplies the gradient by ``sigma'(z) <= 0.25``, so the
    derivative factors of ``n`` layers multiply to at most ``0.25 ** n`` (weights aside).

    Args:
        n_layers: Number of sigmoid layers (a non-negative integer).
        answer: The student's value for the bound.

    Returns:
        Feedback: correct when ``answer`` is within 1e-6 relative of ``0.25 ** n_layers``.
    """
    name = "decay bound"
    n = _layer_count(n_layers)
    if n is None:
        return Feedback(False, f"`n_layers` must be an integer between 0 and {MAX_LAYERS}; "
                        f"got {show(n_layers)}.", name)
    bound = sigmoid_max_derivative() ** n
    if is_unanswered(answer):
        return not_answered(name)
    value = as_number(answer)
    if value is None:
        return Feedback(False, f"expected a number, got {show(answer)}. Hint: raise the sigmoid's "
                        f"largest derivative to the power {n}.", name)
    if value > 0 and n > 0 and math.isclose(value, 1.0 / bound, rel_tol=NUMERIC_TOLERANCE):
        return Feedback(False, f"{value:.4g} is the inverse of the bound: the gradient shrinks, so "
                        f"the factor is below 1. Hint: each layer multiplies by a number below 1.", name)
    return check_close(
        name, value, bound, NUMERIC_TOLERANCE,
        why=f"each of the {n} sigmoid layers multiplies the gradient by at most "
            f"sigma'(0) = {sigmoid_max_derivative():g}, so together by at most 0.25**{n}.",
        hint=f"the sigmoid's derivative is at most {sigmoid_max_derivative():g} (at z = 0); "
             f"multiply that factor once per layer, {n} times.",
    )


def check_layers_to_shrink(factor: float, answer: Any) -> Feedback:
    """Exercise 2: how many sigmoid layers it takes before the bound falls to ``factor`` or below.

    Args:
        factor: Target shrink factor in (0, 1), e.g. ``1e-6`` ("a millionth").
        answer: The student's number of layers.

    Returns:
        Feedback: correct when ``answer`` is the smallest ``n`` with ``0.25 ** n <= factor``.
    """
    name = "layers to shrink"
    target = as_number(factor)
    if target is None or not 0 < target < 1:
        return Feedback(False, f"`factor` must be a number in (0, 1); got {show(factor)}.", name)
    d = sigmoid_max_derivative()
    expected = 0
    bound = 1.0
    while bound > target:  # exact smallest n, no log rounding at exact powers of 0.25
        expected += 1
        bound *= d
    if is_unanswered(answer):
        return not_answered(name)
    n = as_whole_number(answer, MAX_LAYERS)
    if n is None:
        return Feedback(False, f"expected a whole number of layers, got {show(answer)}. Hint: "
                        f"find the smallest n with 0.25**n <= {target:g}.", name)
    if n == expected:
        return Feedback(True, f"{n} layers: 0.25**{n - 1} = {d ** (n - 1):.3g} is still above "
                        f"{target:g}, 0.25**{n} = {d ** n:.3g} is not.", name)
    direction = "too few" if n < expected else "more than needed"
    return Feedback(False, f"{n} is {direction}: 0.25**{n} = {d ** n:.3g}. Hint: look for the "
                    f"first row of the decay table whose bound is <= {target:g}, or compute "
                    f"log({target:g}) / log(0.25) and round up.", name)


def _grad_norms(report: Any) -> list[float] | None:
    layers = getattr(report, "layers", None)
    try:
        norms = [float(v) for v in layers["grad_norm"]]
    except (TypeError, KeyError, ValueError, IndexError):
        return None
    return norms if len(norms) >= 2 else None


def check_first_to_last_ratio(report: Any, answer: Any) -> Feedback:
    """Exercise 3: the first layer's gradient norm divided by the last layer's, read from a report.

    Args:
        report: The :class:`~gradhealth.HealthReport` the answer was read from.
        answer: The student's ratio ``grad_norm(first layer) / grad_norm(last layer)``.

    Returns:
        Feedback: correct within 5% of the ratio in ``report.layers``.
    """
    name = "first-to-last ratio"
    norms = _grad_norms(report)
    if norms is None:
        return Feedback(False, "pass the HealthReport returned by gh.checkup(...) as `report` "
                        f"(got {type(report).__name__}).", name)
    first, last = norms[0], norms[-1]
    if not (math.isfinite(first) and math.isfinite(last)) or last <= 0:
        return Feedback(False, "this report's last layer has no finite, non-zero gradient norm, "
                        "so the ratio is undefined; use the sigmoid network's report.", name)
    expected = first / last
    if is_unanswered(answer):
        return not_answered(name)
    value = as_number(answer)
    if value is None:
        return Feedback(False, f"expected a number, got {show(answer)}. Hint: use the 'grad_norm' column "
                        "of report.layers, first row and last row.",
                        name)
    if expected > 0 and value > 0 and not math.isclose(
        value, expected, rel_tol=MEASURED_TOLERANCE
    ) and math.isclose(value, 1.0 / expected, rel_tol=MEASURED_TOLERANCE):
        return Feedback(False, f"{value:.3g} is the inverse ratio (last / first). Hint: the "
                        "first layer's norm goes on top.", name)
    decades = -math.log10(expected) if expected > 0 else math.inf
    return check_close(
        name, value, expected, MEASURED_TOLERANCE,
        why=f"the first layer gets {expected:.3g} of the last layer's gradient, about "
            f"{decades:.0f} orders of magnitude less: with equal learning rates it learns "
            "that much more slowly.",
        hint="divide the first row's grad_norm by the last row's grad_norm in report.layers, "
             "and use the report you were given (every network and backend measures its own).",
    )

"""Self-checks for notebook 6, "Gradient Solutions Summary".

Each check computes the expected answer itself (from the library's rules or from the result the
student measured) and returns a :class:`~gradhealth.course.exercises.Feedback` saying whether the
answer is right and why, or giving a hint. Checks never raise on a malformed answer.

Example:
    >>> from gradhealth.course.exercises import solutions
    >>> print(solutions.check_matched_initializer("relu", "he_normal"))
    ✅ Correct (matched initializer): ...

References:
    He et al. 2015 (He initialization); Pascanu, Mikolov & Bengio 2013 (clipping);
    Kingma & Ba 2015 (Adam); He et al. 2016 (residual connections).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from gradhealth.core.knowledge import matched_initializer
from gradhealth.course.exercises._feedback import Feedback, check_close
from gradhealth.treatment import PRIORITY

__all__ = ["NUMERIC_TOLERANCE", "check_best_optimizer", "check_clipped_norm",
           "check_matched_initializer", "check_treatment_order", "check_treatment_verified",
           "clipped_global_norm"]

NUMERIC_TOLERANCE: float = 1e-6
"""Relative tolerance for answers computed exactly (clipping arithmetic): float64 round-off."""


def check_treatment_order(answer: Any) -> Feedback:
    """Is ``answer`` an ordering of treatment categories with causes before symptoms?

    Args:
        answer: A list of category names (e.g. ``["activation", "initializer", "clipping"]``),
            each from :data:`gradhealth.treatment.PRIORITY`, without repeats.

    Returns:
        Feedback; right when the list follows :data:`~gradhealth.treatment.PRIORITY`.
    """
    name = "treatment order"
    if isinstance(answer, str) or not isinstance(answer, Sequence) or not answer:
        return Feedback(False, f"expected a non-empty list of category names, got {answer!r}.",
                        name)
    unknown = [a for a in answer if a not in PRIORITY]
    if unknown or len(set(answer)) != len(answer):
        return Feedback(False, f"use each of {list(PRIORITY)} at most once; got {list(answer)}.",
                        name)
    expected = sorted(answer, key=PRIORITY.__getitem__)
    if list(answer) == expected:
        return Feedback(True, "causes first (data, activation, the initializer matched to it, "
                        "architecture), then optimization, and the clipping safety net last.",
                        name)
    return Feedback(False, f"not yet: treat the cause before the symptom. Hint: which change "
                    f"makes another necessary? Expected order: {expected}.", name)


def check_matched_initializer(activation: str, answer: Any) -> Feedback:
    """Is ``answer`` the Keras initializer whose variance is derived for ``activation``?

    Args:
        activation: A Keras activation name (``"relu"``, ``"selu"``, ``"tanh"``, ...).
        answer: A Keras initializer name such as ``"he_normal"``.

    Returns:
        Feedback comparing with :func:`gradhealth.models.robust.matched_initializer`.
    """
    name = "matched initializer"
    expected = matched_initializer(activation)
    if isinstance(answer, str) and answer.lower().replace("-", "_") == expected:
        return Feedback(True, f"{expected} keeps the variance of {activation} layers constant "
                        "through depth.", name)
    return Feedback(False, f"{answer!r} is not matched to {activation}. Hint: ReLU-family units "
                    "zero half the signal (Var(W) = 2/fan_in, He); SELU and tanh need "
                    "Var(W) = 1/fan_in (LeCun); sigmoid takes Glorot's compromise.", name)


def clipped_global_norm(global_norm: float, threshold: float) -> float:
    """The global norm after clipping by global norm: ``min(global_norm, threshold)``.

    Args:
        global_norm: Norm of all gradients together before clipping (>= 0).
        threshold: The clipping limit (> 0).

    Returns:
        The norm after clipping.
    """
    return min(float(global_norm), float(threshold))


def check_clipped_norm(global_norm: float, threshold: float, answer: Any) -> Feedback:
    """Is ``answer`` the global gradient norm after clipping by global norm at ``threshold``?

    Args:
        global_norm: The norm before clipping.
        threshold: The clipping limit.
        answer: The student's norm after clipping.

    Returns:
        Feedback.
    """
    expected = clipped_global_norm(global_norm, threshold)
    scale = expected / global_norm if global_norm > 0 else 1.0
    return check_close(
        "clipped norm", answer, expected, NUMERIC_TOLERANCE,
        f"every gradient is multiplied by {scale:.3g}, so the direction is unchanged and the "
        f"norm becomes min({global_norm:g}, {threshold:g}).",
        "Clipping by global norm rescales all gradients by min(1, threshold / norm).")


def check_best_optimizer(comparison: Any, answer: Any) -> Feedback:
    """Is ``answer`` the optimizer with the best test accuracy in ``comparison``?

    Args:
        comparison: The :class:`gradhealth.course.optimizers.OptimizerComparison` the student read.
        answer: An optimizer name from its table.

    Returns:
        Feedback; ties on accuracy go to the fewest steps to the target loss.
    """
    name = "best optimizer"
    expected = comparison.best()
    table = comparison.table().set_index("optimizer")
    if answer == expected:
        acc = table.loc[expected, "test_accuracy"]
        return Feedback(True, f"{expected} reached test accuracy {acc:.3f}; per-parameter step "
                        "sizes let it escape the plateau that stalls plain SGD.", name)
    if answer not in table.index:
        return Feedback(False, f"{answer!r} is not in the table; choose from "
                        f"{list(table.index)}.", name)
    return Feedback(False, f"{answer} reached {table.loc[answer, 'test_accuracy']:.3f}; look at "
                    "the test_accuracy column for a higher one.", name)


def check_treatment_verified(result: Any, status: Any, accuracy: Any) -> Feedback:
    """Did the student read the re-examination correctly?

    Args:
        result: The :class:`gradhealth.treatment.TreatmentResult` of ``treat``.
        status: The treated network's status after training, as the student read it.
        accuracy: Its accuracy, as the student read it (to two decimals is enough).

    Returns:
        Feedback.
    """
    name = "treatment verified"
    expected_status = result.after.status
    if status != expected_status:
        return Feedback(False, f"the status after treatment is not {status!r}: look at "
                        "result.after.status (or the summary table's last row).", name)
    try:
        value = float(accuracy)
    except (TypeError, ValueError):
        return Feedback(False, f"expected a number for the accuracy, got {accuracy!r}.", name)
    if not math.isfinite(value) or abs(value - result.accuracy) > 0.005:
        return Feedback(False, f"{value:g} is not the measured accuracy; read result.accuracy.",
                        name)
    return Feedback(True, f"'{expected_status}' at accuracy {result.accuracy:.2f}: the second "
                    "checkup confirms the treatment worked.", name)

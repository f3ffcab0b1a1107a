"""Self-checks for notebook 5, "Weight Initialization Strategies".

Each check computes the expected answer itself from the formulas in
:mod:`gradhealth.core.variance` (or the LSUV update rule) and returns a
:class:`~gradhealth.course.exercises.Feedback`; a malformed answer gets feedback, never an exception.

Example:
    >>> from gradhealth.course.exercises import initialization as ex
    >>> print(ex.check_he_std(512, (2 / 512) ** 0.5))
    ✅ Correct (He normal std, fan_in=512): 0.0625 — ...

References:
    Glorot & Bengio (2010); He et al. (2015); Mishkin & Matas (2016).
"""

from __future__ import annotations

import math
from typing import Any

from gradhealth.core.knowledge import matched_initializer
from gradhealth.course.exercises._feedback import (
    Feedback,
    as_name,
    as_number,
    check_close,
    is_unanswered,
    not_answered,
    show,
)
from gradhealth.init.activations import resolve_name

__all__ = ["NUMERIC_TOLERANCE", "check_glorot_variance", "check_he_std", "check_lsuv_scale",
           "check_pairing"]

NUMERIC_TOLERANCE: float = 0.01
"""Relative tolerance for a formula evaluated by hand: 1% accepts three significant digits and
rejects the classic mistakes (a missing factor 2 or a square root), which are off by >= 41%."""

#: Initializer families: the uniform and normal variant of a rule have the same variance.
_FAMILIES: dict[str, str] = {
    "glorot_uniform": "glorot", "glorot_normal": "glorot", "xavier": "glorot",
    "he_uniform": "he", "he_normal": "he", "kaiming": "he",
    "lecun_uniform": "lecun", "lecun_normal": "lecun",
}


def _positive(value: Any) -> float | None:
    number = as_number(value)
    return number if number is not None and number > 0 else None


def check_he_std(fan_in: int, answer: Any) -> Feedback:
    """Standard deviation of He-normal weights for a layer with ``fan_in`` inputs."""
    exercise = f"He normal std, fan_in={show(fan_in)}"
    n = _positive(fan_in)
    if n is None:
        return Feedback(False, f"fan_in must be a positive number; got {show(fan_in)}.", exercise)
    expected = math.sqrt(2.0 / n)
    return check_close(
        exercise, answer, expected, NUMERIC_TOLERANCE,
        why="Var(W) = 2 / fan_in: ReLU zeroes half of its input, so the weights must double the "
            "variance to keep it constant (He et al. 2015).",
        hint="Start from He's variance rule and remember the question asks for a standard "
             "deviation.",
    )


def check_glorot_variance(fan_in: int, fan_out: int, answer: Any) -> Feedback:
    """Variance of Glorot (Xavier) weights for a ``fan_in x fan_out`` kernel."""
    exercise = f"Glorot variance, {show(fan_in)}x{show(fan_out)}"
    n_in, n_out = _positive(fan_in), _positive(fan_out)
    if n_in is None or n_out is None:
        return Feedback(False, "fan_in and fan_out must be positive numbers.", exercise)
    expected = 2.0 / (n_in + n_out)
    return check_close(
        exercise, answer, expected, NUMERIC_TOLERANCE,
        why="Var(W) = 2 / (fan_in + fan_out): the compromise between keeping the forward "
            "variance (1/fan_in) and the backward variance (1/fan_out) (Glorot & Bengio 2010).",
        hint="Glorot averages the forward condition (fan_in) and the backward one (fan_out).",
    )


def check_lsuv_scale(variance: float, answer: Any, target_var: float = 1.0) -> Feedback:
    """The factor LSUV multiplies a kernel by when its layer's output variance is ``variance``."""
    exercise = f"LSUV scale for variance {show(variance)}"
    measured, target = _positive(variance), _positive(target_var)
    if measured is None or target is None:
        return Feedback(False, "variance and target_var must be positive numbers.", exercise)
    expected = math.sqrt(target / measured)
    return check_close(
        exercise, answer, expected, NUMERIC_TOLERANCE,
        why="Scaling the kernel by s scales the output by s and its variance by s^2, so "
            "s = sqrt(target / variance) (Mishkin & Matas 2016).",
        hint="Variance scales with the square of the kernel scale.",
    )


def check_pairing(activation: str, answer: Any) -> Feedback:
    """Which initializer family pairs with ``activation`` (uniform/normal variants accepted)."""
    exercise = f"initializer for {show(activation)}"
    try:
        expected = matched_initializer(resolve_name(as_name(activation) or ""))
    except ValueError as e:
        return Feedback(False, str(e), exercise)
    if is_unanswered(answer):
        return not_answered(exercise)
    chosen = as_name(answer)
    family = _FAMILIES.get(chosen or "")
    if family is None:
        return Feedback(False, f"{show(answer)} is not one of {sorted(_FAMILIES)}.", exercise)
    if family == _FAMILIES[expected]:
        return Feedback(True, f"{chosen} — {activation} pairs with {expected}.", exercise)
    return Feedback(False, f"{chosen} is not the pairing for {activation}. Is it "
                           "rectifier-like, self-normalizing or symmetric?", exercise)

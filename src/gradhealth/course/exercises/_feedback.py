"""The feedback object every exercise check returns, and the answer parsers the checks share.

A check is called by a student in a notebook cell, often with a half-finished answer. Its promise:
it never raises. It accepts numbers, numeric strings (``"0.25"``, ``"1e-3"``) and a one-element list
where the question asks for one number or one name, rejects everything else with a hint, reports
``None`` and empty answers as "not answered yet", and never prints the full answer after a wrong
attempt (the right answer's explanation is shown only once it is given).
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["NOT_ANSWERED", "Feedback", "as_name", "as_name_list", "as_number", "as_whole_number",
           "check_close", "is_unanswered", "not_answered", "show"]

NOT_ANSWERED: str = "not answered yet: replace `None` with your answer and run the cell again."
"""The message of every check called before the student has answered."""

_SHOW_CHARS: int = 60
"""Longest echo of a student's answer in a message (a pasted DataFrame would flood the cell)."""


@dataclass(frozen=True)
class Feedback:
    """The verdict on a student's answer.

    Attributes:
        correct: Whether the answer is right.
        message: Why: what the right answer means, or what the answer gets wrong and a hint.
        exercise: The exercise's short name.
        answered: False when the check was called with no answer yet (``None``, empty).
    """

    correct: bool
    message: str
    exercise: str = ""
    answered: bool = True

    def __bool__(self) -> bool:
        return self.correct

    def __str__(self) -> str:
        if not self.answered:
            mark = "⏳"  # the message itself starts with "not answered yet"
        else:
            mark = "✅ Correct" if self.correct else "❌ Not yet"
        head = f"{mark} ({self.exercise})" if self.exercise else mark
        return f"{head}: {self.message}"

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        color = "#1b7f3b" if self.correct else ("#8a6d00" if not self.answered else "#b3261e")
        return f'<div style="color:{color};font-weight:600">{html.escape(str(self))}</div>'


def show(value: Any) -> str:
    """A short, safe echo of a student's answer for a message (never raises)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a student's object may have a broken __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _SHOW_CHARS else text[:_SHOW_CHARS - 3] + "..."


def is_unanswered(answer: Any) -> bool:
    """True for ``None``, ``...``, a blank string and an empty list/tuple/set/dict/array."""
    if answer is None or answer is Ellipsis:
        return True
    if isinstance(answer, str):
        return not answer.strip()
    if isinstance(answer, (list, tuple, set, frozenset, dict)):
        return len(answer) == 0
    if isinstance(answer, np.ndarray):
        return answer.size == 0
    return False


def not_answered(exercise: str) -> Feedback:
    """The feedback for a check called before the student answered."""
    return Feedback(False, NOT_ANSWERED, exercise, answered=False)


def _single(answer: Any) -> Any:
    """The element of a one-element list/tuple/array, else ``answer`` unchanged."""
    if isinstance(answer, (list, tuple)) and len(answer) == 1:
        return answer[0]
    if isinstance(answer, np.ndarray) and answer.size == 1:
        return answer.reshape(-1)[0]
    return answer


def as_number(value: Any) -> float | None:
    """A student's answer as a finite float, or None when it is not one.

    Accepts ints (any size that fits a float), floats, NumPy scalars, numeric strings such as
    ``"0.25"``, ``" 1e-3 "`` or ``"1_000"``, and a one-element list/tuple/array of one of these.
    Bools, text, NaN, infinities and numbers beyond float range give None.
    """
    value = _single(value)
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            out = float(text)
        except ValueError:
            return None
    elif isinstance(value, (numbers.Real, np.number)):
        try:
            out = float(value)
        except (OverflowError, TypeError, ValueError):  # 10**400 does not fit a float
            return None
    else:
        return None
    return out if math.isfinite(out) else None


def as_whole_number(value: Any, largest: int = 10**6) -> int | None:
    """A student's answer as a whole number in ``[0, largest]`` (``"12"``, ``12.0``, ``[12]``), or None."""
    number = as_number(value)
    if number is None or number != int(number) or not 0 <= number <= largest:
        return None
    return int(number)


def as_name(value: Any) -> str | None:
    """A student's answer as a lower-case name with ``-``/spaces as ``_`` (``"He-Normal"`` ->
    ``"he_normal"``), accepting a one-element list; None when it is not text."""
    value = _single(value)
    if not isinstance(value, str) or not value.strip():
        return None
    return "_".join(value.strip().lower().replace("-", " ").split())


def as_name_list(value: Any) -> list[str] | None:
    """A list of names (a list/tuple of strings, or one comma-separated string), or None."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, Sequence) or isinstance(value, str):
        return None
    names = [as_name(v) for v in value]
    return None if any(n is None for n in names) else [n for n in names if n is not None]


def check_close(exercise: str, answer: Any, expected: float, rel: float, why: str,
                hint: str) -> Feedback:
    """Feedback for a numeric answer that must be within relative tolerance ``rel``.

    Args:
        exercise: The exercise's short name.
        answer: The student's answer (parsed with :func:`as_number`).
        expected: The right value.
        rel: Relative tolerance.
        why: The explanation shown once the answer is right (may name the right value).
        hint: What to try after a wrong answer (must not give the value away).

    Returns:
        Feedback.
    """
    if is_unanswered(answer):
        return not_answered(exercise)
    value = as_number(answer)
    if value is None:
        return Feedback(False, f"expected one finite number (e.g. 0.25 or \"2.5e-3\"), got "
                        f"{show(answer)}. Hint: {hint}", exercise)
    if abs(value - expected) <= rel * abs(expected):
        return Feedback(True, f"{value:.4g} — {why}", exercise)
    return Feedback(False, f"{value:.4g} is not right. Hint: {hint}", exercise)

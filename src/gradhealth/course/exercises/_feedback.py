"""The feedback object every exercise check returns."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Feedback:
    """The verdict on a student's answer.

    Attributes:
        correct: Whether the answer is right.
        message: Why: what was expected, or what the answer gets wrong and a hint.
        exercise: The exercise's short name.
    """

    correct: bool
    message: str
    exercise: str = ""

    def __bool__(self) -> bool:
        return self.correct

    def __str__(self) -> str:
        mark = "✅ Correct" if self.correct else "❌ Not yet"
        head = f"{mark} ({self.exercise})" if self.exercise else mark
        return f"{head}: {self.message}"

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        color = "#1b7f3b" if self.correct else "#b3261e"
        return f'<div style="color:{color};font-weight:600">{html.escape(str(self))}</div>'


def as_number(value: object) -> float | None:
    """A student's answer as a finite float, or None when it is not one (bools are not numbers)."""
    if isinstance(value, bool):
        return None
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def check_close(exercise: str, answer: object, expected: float, rel: float, why: str,
                hint: str) -> Feedback:
    """Feedback for a numeric answer that must be within relative tolerance ``rel``."""
    try:
        value = float(answer)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return Feedback(False, f"expected a number, got {answer!r}. {hint}", exercise)
    if abs(value - expected) <= rel * abs(expected):
        return Feedback(True, f"{value:.4g} — {why}", exercise)
    return Feedback(False, f"{value:.4g} is not right. {hint}", exercise)

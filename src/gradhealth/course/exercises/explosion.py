"""Self-checks for notebook 3, "Gradient Explosion Detection".

Every check takes the student's answer (and, where the answer depends on a measurement, the
numbers it was read from), computes the expected value itself with the library, and returns a
:class:`~gradhealth.course.exercises.Feedback` saying whether the answer is right and why, or giving a
hint. Checks never raise on a malformed answer: the feedback says what was expected.

Example:
    >>> from gradhealth.course.exercises import explosion
    >>> print(explosion.check_global_clip(1.6))
    ✅ Correct (global-norm clipping): 1.6 — ...

References:
    Pascanu, Mikolov & Bengio (2013), https://arxiv.org/abs/1211.5063;
    Brock, De, Smith & Simonyan (2021), https://arxiv.org/abs/2102.06171.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradhealth.core.clipping import adaptive_clip, clip_by_global_norm
from gradhealth.course.exercises._feedback import (
    Feedback,
    as_number,
    as_whole_number,
    check_close,
    is_unanswered,
    not_answered,
    show,
)

__all__ = ["GLOBAL_CLIP_GRADS", "GLOBAL_CLIP_MAX_NORM", "NUMERIC_TOLERANCE", "check_agc_limit",
           "check_global_clip", "check_warning_lead"]

NUMERIC_TOLERANCE: float = 1e-3
"""Relative tolerance for answers computed by hand: accepts 3-4 significant digits."""

GLOBAL_CLIP_GRADS: tuple[tuple[float, ...], ...] = ((3.0, 0.0), (0.0, 4.0))
"""The two gradient tensors of exercise 1: their global norm is exactly 5."""
GLOBAL_CLIP_MAX_NORM: float = 2.0
"""Exercise 1's clipping threshold."""


def check_global_clip(answer: Any) -> Feedback:
    """Exercise 1: ``g1 = [3, 0]``, ``g2 = [0, 4]``, global-norm clipping at 2.0: what is the
    second entry of the clipped ``g2``?"""
    grads = [np.asarray(g) for g in GLOBAL_CLIP_GRADS]
    clipped, norm = clip_by_global_norm(grads, GLOBAL_CLIP_MAX_NORM)
    expected = float(clipped[1][1])
    return check_close(
        "global-norm clipping", answer, expected, NUMERIC_TOLERANCE,
        why=(f"the global norm is sqrt(3^2 + 4^2) = {norm:g} > {GLOBAL_CLIP_MAX_NORM:g}, so every "
             f"tensor is multiplied by {GLOBAL_CLIP_MAX_NORM:g}/{norm:g}: 4 x 0.4 = {expected:g}."),
        hint=("Compute the norm of ALL gradients together (not each tensor), then scale every "
              "entry by max_norm / global_norm."))


def check_agc_limit(answer: Any, weight_norm: float = 0.5, clip_factor: float = 0.01,
                    eps: float = 1e-3) -> Feedback:
    """Exercise 2: the largest gradient norm AGC lets through for a unit whose weights have
    norm ``weight_norm``."""
    name = "AGC limit"
    limits = [as_number(v) for v in (weight_norm, clip_factor, eps)]
    if any(v is None for v in limits) or limits[0] < 0 or limits[1] <= 0 or limits[2] <= 0:
        return Feedback(False, "weight_norm must be >= 0, clip_factor and eps > 0; got "
                        f"{show(weight_norm)}, {show(clip_factor)}, {show(eps)}.", name)
    weight_norm, clip_factor, eps = (float(v) for v in limits)  # type: ignore[arg-type]
    w = np.asarray([[weight_norm]])
    huge = np.asarray([[1e6]])
    expected = float(np.abs(adaptive_clip([huge], [w], clip_factor, eps)[0]).item())
    return check_close(
        name, answer, expected, NUMERIC_TOLERANCE,
        why=(f"AGC caps ||G_i|| at clip_factor x max(||W_i||, eps) = {clip_factor:g} x "
             f"max({weight_norm:g}, {eps:g}) = {expected:g}."),
        hint="Multiply clip_factor by the unit's weight norm (or eps if the weights are smaller).")


def check_warning_lead(answer: Any, first_alert_step: int, nan_step: int) -> Feedback:
    """Exercise 3: how many steps before the gradients became NaN did the first alert fire?"""
    name = "early-warning lead"
    first, nan = as_whole_number(first_alert_step), as_whole_number(nan_step)
    if first is None or nan is None:
        return Feedback(False, "first_alert_step and nan_step must be step numbers; got "
                        f"{show(first_alert_step)} and {show(nan_step)}.", name)
    expected = nan - first
    if is_unanswered(answer):
        return not_answered(name)
    lead = as_whole_number(answer)
    if lead is None:
        return Feedback(False, f"expected a whole number of steps, got {show(answer)}.", name)
    if lead == expected:
        return Feedback(True, f"{expected} steps: the first alert came at step {first_alert_step} "
                              f"and the gradients became NaN at step {nan_step}.", name)
    return Feedback(False, f"{lead} is not right. Hint: subtract the step of the first alert in "
                           "monitor.alerts from the first step with NaN gradients.", name)

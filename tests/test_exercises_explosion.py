"""Self-checks of notebook 3: right answers pass, wrong or malformed ones get a hint."""

from __future__ import annotations

import numpy as np

from gradhealth.core.clipping import clip_by_global_norm
from gradhealth.course.exercises import Feedback, explosion


def test_global_clip_check_against_independent_arithmetic():
    g = [np.array([3.0, 0.0]), np.array([0.0, 4.0])]
    norm = np.sqrt(9.0 + 16.0)
    expected = 4.0 * explosion.GLOBAL_CLIP_MAX_NORM / norm
    assert clip_by_global_norm(g, explosion.GLOBAL_CLIP_MAX_NORM)[1] == norm
    assert explosion.check_global_clip(expected)
    wrong = explosion.check_global_clip(2.0)  # clipping g2 alone to norm 2: the classic mistake
    assert isinstance(wrong, Feedback) and not wrong and "ALL gradients" in wrong.message
    assert not explosion.check_global_clip("a lot")


def test_agc_limit_check_uses_eps_for_small_weights():
    assert explosion.check_agc_limit(0.01 * 0.5, weight_norm=0.5)
    assert explosion.check_agc_limit(0.01 * 1e-3, weight_norm=0.0)  # eps floor
    assert not explosion.check_agc_limit(0.0, weight_norm=0.0)


def test_warning_lead_check():
    assert explosion.check_warning_lead(3, first_alert_step=4, nan_step=7)
    assert not explosion.check_warning_lead(7, first_alert_step=4, nan_step=7)
    assert explosion.check_warning_lead(3.0, first_alert_step=4, nan_step=7)   # a whole float
    assert explosion.check_warning_lead("3", first_alert_step=4, nan_step=7)   # numeric text
    assert not explosion.check_warning_lead(3.5, first_alert_step=4, nan_step=7)
    assert not explosion.check_warning_lead(None, first_alert_step=4, nan_step=7).answered
    assert "step 4" in str(explosion.check_warning_lead(3, 4, 7))

"""The checkup: one batch's gradients, their statistics and a diagnosis (:class:`HealthReport`)."""

from gradhealth.diagnosis.checkup import checkup
from gradhealth.diagnosis.gradients import gradient_stats, layer_gradients
from gradhealth.diagnosis.report import HealthReport, diagnose

__all__ = ["HealthReport", "checkup", "diagnose", "gradient_stats", "layer_gradients"]

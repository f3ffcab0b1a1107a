"""From diagnosis to treatment: :func:`prescribe` an ordered plan, :func:`treat` and verify it."""

from gradhealth.treatment.apply import TreatmentResult, treat
from gradhealth.treatment.plan import PRIORITY, TreatmentPlan, TreatmentStep, prescribe

__all__ = ["PRIORITY", "TreatmentPlan", "TreatmentResult", "TreatmentStep", "prescribe", "treat"]

"""Plain-NumPy core of gradhealth: statistics, thresholds, diagnosis. Never imports keras."""

from gradhealth.core.stats import dead_unit_fraction, robust_norm, tensor_stats
from gradhealth.core.thresholds import Thresholds

__all__ = ["Thresholds", "dead_unit_fraction", "robust_norm", "tensor_stats"]

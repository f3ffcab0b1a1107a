"""Gradient-explosion early warning: stateful detectors fed one norm per step.

The public face of :mod:`gradhealth.core.detect` (pure NumPy). Feed an
:class:`ExplosionDetector` the global and per-layer gradient norms of each step; it returns
:class:`Alert` objects (step, kind, layer, numbers, message) when a norm crosses an absolute
threshold, grows geometrically over a window, spikes far above its running mean, or becomes
non-finite. :class:`gradhealth.GradientHealthMonitor` runs one during ``model.fit``.

Example:
    >>> from gradhealth.detect import ExplosionDetector
    >>> det = ExplosionDetector(max_norm=100.0)
    >>> for step, norm in enumerate([1.0, 2.0, 8.0, 40.0, 300.0]):
    ...     for alert in det.update(step, global_norm=norm):
    ...         print(alert.message)
    step 4: gradient norm 300 in (global) exceeds 100
"""

from gradhealth.core.detect import (
    DEFAULT_EMA_ALPHA,
    DEFAULT_GROWTH_FACTOR,
    DEFAULT_GROWTH_WINDOW,
    DEFAULT_MAX_NORM,
    DEFAULT_MIN_NORM,
    DEFAULT_MIN_STD,
    DEFAULT_WARMUP,
    DEFAULT_Z_THRESHOLD,
    GLOBAL,
    KINDS,
    Alert,
    Detector,
    ExplosionDetector,
    ExplosionError,
    GrowthDetector,
    NonFiniteDetector,
    SpikeDetector,
    ThresholdDetector,
)

__all__ = [
    "DEFAULT_EMA_ALPHA",
    "DEFAULT_GROWTH_FACTOR",
    "DEFAULT_GROWTH_WINDOW",
    "DEFAULT_MAX_NORM",
    "DEFAULT_MIN_NORM",
    "DEFAULT_MIN_STD",
    "DEFAULT_WARMUP",
    "DEFAULT_Z_THRESHOLD",
    "GLOBAL",
    "KINDS",
    "Alert",
    "Detector",
    "ExplosionDetector",
    "ExplosionError",
    "GrowthDetector",
    "NonFiniteDetector",
    "SpikeDetector",
    "ThresholdDetector",
]

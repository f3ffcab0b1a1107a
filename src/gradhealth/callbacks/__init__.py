"""Keras callbacks: :class:`GradientHealthMonitor`."""

from gradhealth.callbacks.monitor import GradientHealthMonitor, GradientHealthWarning

__all__ = ["GradientHealthMonitor", "GradientHealthWarning"]

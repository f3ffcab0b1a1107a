"""Optimizer wrappers that act on the gradients inside ``model.fit``, on every backend."""

from gradhealth.optim.clipping import METHODS, ClippingOptimizer
from gradhealth.optim.monitoring import MonitoringOptimizer
from gradhealth.optim.wrapper import GradientWrapperOptimizer, resolve_optimizer

__all__ = ["METHODS", "ClippingOptimizer", "GradientWrapperOptimizer", "MonitoringOptimizer",
           "resolve_optimizer"]

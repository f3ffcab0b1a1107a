"""Initialization and activations: initializers, LSUV, variance propagation, activation catalog."""

from gradhealth.init.initializers import ActivationVarianceScaling
from gradhealth.init.lsuv import lsuv_init

__all__ = ["ActivationVarianceScaling", "lsuv_init"]

"""Checks of Keras objects (models, activations) with Keras-style messages.

Kept apart from :mod:`gradhealth._internal.validation` so that the NumPy-only core can use the
plain checks without importing Keras.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from gradhealth._internal.validation import short_repr

__all__ = ["check_activation", "check_input_shape", "check_model"]


def check_activation(activation: Any) -> Any:
    """Return ``activation`` if Keras knows it (a name or a callable), else raise naming it."""
    try:
        keras.activations.get(activation)
    except ValueError as e:
        raise ValueError(
            f"Argument `activation` is not a Keras activation. Received: activation={activation!r}"
        ) from e
    return activation


def check_model(model: Any) -> Any:
    """Check that ``model`` is a built Keras model with trainable weights."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `model` must be a keras.Model. Received: model={short_repr(model)} "
            f"(of type {type(model).__name__})"
        )
    if not model.built:
        raise ValueError(
            "Argument `model` must be built before its gradients can be examined: give it an "
            "`Input` or call it on a batch first. "
            f"Received: model={model.name!r} (built=False)"
        )
    if not model.trainable_variables:
        raise ValueError(
            "Argument `model` has no trainable weights, so there are no gradients to examine. "
            f"Received: model={model.name!r} with {len(model.weights)} weights, none trainable"
        )
    return model


def check_input_shape(model: Any, x: np.ndarray) -> None:
    """Compare ``x``'s shape with a functional/Sequential model's declared input shape."""
    inputs = getattr(model, "inputs", None)
    try:
        if not inputs or len(inputs) != 1:
            return
        expected = tuple(inputs[0].shape)
    except (AttributeError, ValueError):
        return
    got = x.shape
    if len(expected) != len(got) or any(
        e is not None and e != g for e, g in zip(expected[1:], got[1:], strict=True)
    ):
        raise ValueError(
            f"Argument `x` has shape {got}, but model {model.name!r} expects inputs of shape "
            f"{expected} (None = any size). Received: x.shape={got}"
        )

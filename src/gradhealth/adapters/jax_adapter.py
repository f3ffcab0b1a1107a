"""JAX adapter: ``jax.value_and_grad`` over ``model.stateless_call``, jitted and cached."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import jax
import keras
import numpy as np

__all__ = ["USER_ERRORS", "compute_gradients"]

# Errors that mean the data or loss do not fit the model (reported as ValueError).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError)

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _build(model: keras.Model, loss_fn: Callable) -> Callable:
    def compute_loss(trainable, non_trainable, x, y):
        y_pred, _, losses = model.stateless_call(
            trainable, non_trainable, x, training=True, return_losses=True
        )
        loss = keras.ops.mean(loss_fn(y, y_pred))
        for extra in losses:
            loss = loss + extra
        return loss

    return jax.jit(jax.value_and_grad(compute_loss))


def compute_gradients(model: keras.Model, x: Any, y: Any, loss_fn: Callable
                      ) -> tuple[float, list[np.ndarray | None], list[np.ndarray]]:
    """One forward/backward pass: the loss, per-variable gradients and the variables' values.

    The stateless call leaves the model's own variables untouched: updated non-trainable state
    is discarded. JAX returns zeros (not None) for variables the loss does not depend on.
    """
    per_model = _CACHE.setdefault(model, {})
    key = (id(loss_fn), len(model.trainable_variables))
    if key not in per_model:
        per_model[key] = _build(model, loss_fn)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    loss, grads = per_model[key](trainable, non_trainable, x, y)
    return float(loss), [np.asarray(g) for g in grads], [np.asarray(w) for w in trainable]

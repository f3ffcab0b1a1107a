"""JAX adapter: ``jax.grad`` of a stateless forward pass, jitted once per model and loss.

The model runs inside a ``keras.StatelessScope`` that maps every variable to the traced value
given to the jitted step: updated state (batch-norm statistics, seed generators, metric
trackers) is collected by the scope and discarded, so the model's own variables are never
written. Under ``keras.distribution.DataParallel`` the variables arrive replicated over the
devices and XLA runs the step on the whole batch, giving the single-device numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import keras

__all__ = ["USER_ERRORS", "build_step", "run"]

# Errors that mean the data or loss do not fit the model (reported as ValueError).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, IndexError)


def build_step(model: keras.Model, objective: Any, reduce: Callable | None,
               accepts_training: bool) -> Callable:
    """The compiled probe step of ``model`` (see :func:`gradhealth.adapters.probe`)."""
    trainable = list(model.trainable_variables)
    non_trainable = list(model.non_trainable_variables)

    def loss_fn(trainable_values, non_trainable_values, x, y, sample_weight, scale):
        mapping = list(zip(trainable, trainable_values, strict=True)) + list(
            zip(non_trainable, non_trainable_values, strict=True))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
            y_pred = model(x, training=True) if accepts_training else model(x)
            loss = jnp.asarray(objective.fn(model, x, y, y_pred, sample_weight), jnp.float32)
        return loss * scale, loss

    def step(trainable_values, non_trainable_values, x, y, sample_weight, scale):
        wrapper.traces += 1
        grads, loss = jax.grad(loss_fn, has_aux=True)(
            trainable_values, non_trainable_values, x, y, sample_weight, scale)
        grads = [jnp.asarray(g, jnp.float32) / scale for g in grads]
        if reduce is not None:
            return loss, reduce(grads, trainable_values)
        return loss, (grads, trainable_values)

    compiled = jax.jit(step)

    def wrapper(x, y, sample_weight, scale):
        loss, payload = compiled([v.value for v in trainable], [v.value for v in non_trainable],
                                 x, y, sample_weight, scale)
        if reduce is not None:
            payload = jax.device_get(payload)
        else:
            grads, weights = jax.device_get(payload)
            payload = (list(grads), list(weights))
        # jax.grad gives zeros, not None, for a variable the loss does not depend on.
        return float(loss), payload, [True] * len(trainable)

    wrapper.traces = 0
    return wrapper


def run(model: keras.Model, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` (JAX needs no special context)."""
    return fn()

"""TensorFlow adapter: gradients from ``tf.GradientTape`` inside a cached ``tf.function``."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = ["USER_ERRORS", "compute_gradients"]

# Errors that mean the data or loss do not fit the model (reported as ValueError).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, tf.errors.InvalidArgumentError)

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _build(model: keras.Model, loss_fn: Callable) -> Callable:
    trainable = model.trainable_variables
    state = model.non_trainable_variables

    @tf.function(reduce_retracing=True)
    def step(x, y):
        # Batch-norm statistics and RNG state are restored inside the graph, in the same call.
        saved = [tf.identity(v.value) for v in state]
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = keras.ops.mean(loss_fn(y, y_pred))
            if model.losses:
                loss = loss + tf.add_n([tf.cast(v, loss.dtype) for v in model.losses])
        grads = tape.gradient(loss, trainable)
        with tf.control_dependencies([g for g in grads if g is not None] + [loss]):
            for v, value in zip(state, saved, strict=True):
                v.assign(value)
        return loss, grads, [tf.identity(v.value) for v in trainable]

    return step


def compute_gradients(model: keras.Model, x: Any, y: Any, loss_fn: Callable
                      ) -> tuple[float, list[np.ndarray | None], list[np.ndarray]]:
    """One forward/backward pass: the loss, per-variable gradients (None = unused) and the
    variables' values, all read back in the same call."""
    per_model = _CACHE.setdefault(model, {})
    key = (id(loss_fn), len(model.trainable_variables))
    if key not in per_model:
        per_model[key] = _build(model, loss_fn)
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    # Each model gets its own tf.function; TF warns about "retracing" once several exist, which
    # is expected here (one trace per model and input signature), so the warning is muted.
    tf_logger.setLevel(logging.ERROR)
    try:
        loss, grads, weights = per_model[key](x, y)
    finally:
        tf_logger.setLevel(level)
    return (float(loss.numpy()), [None if g is None else _to_numpy(g) for g in grads],
            [w.numpy() for w in weights])


def _to_numpy(g: Any) -> np.ndarray:
    if isinstance(g, tf.IndexedSlices):
        g = tf.convert_to_tensor(g)
    return g.numpy()

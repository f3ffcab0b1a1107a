"""torch adapter: ``torch.autograd.grad`` over the Keras variables' parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import torch

from gradhealth.adapters._state import preserved_non_trainable_state

__all__ = ["USER_ERRORS", "compute_gradients"]

# Errors that mean the data or loss do not fit the model (reported as ValueError).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, RuntimeError)

def compute_gradients(model: keras.Model, x: Any, y: Any, loss_fn: Callable
                      ) -> tuple[float, list[np.ndarray | None], list[np.ndarray]]:
    """One forward/backward pass: the loss, per-variable gradients (None = unused) and the
    variables' values."""
    trainable = model.trainable_variables
    params = [v.value for v in trainable]
    with preserved_non_trainable_state(model), torch.enable_grad():
        xt = keras.tree.map_structure(keras.ops.convert_to_tensor, x)
        yt = keras.ops.convert_to_tensor(y)
        y_pred = model(xt, training=True)
        loss = keras.ops.mean(loss_fn(yt, y_pred))
        for extra in model.losses:
            loss = loss + extra
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return (float(loss.detach().cpu()),
            [None if g is None else g.detach().cpu().numpy() for g in grads],
            [p.detach().cpu().numpy() for p in params])

"""Backend adapters: the only code in gradhealth that knows TensorFlow, JAX or torch.

Each adapter exposes ``compute_gradients(model, x, y, loss_fn) -> (loss, grads, weights)`` where
``grads`` is a list of NumPy arrays (or ``None`` for a variable the loss does not depend on) in the
order of ``model.trainable_variables`` and ``weights`` the variables' values read in the same
call, and ``USER_ERRORS``, the backend exceptions that mean the data do not fit the model. The forward pass runs with ``training=True``; non-trainable state
(batch-norm moving statistics, seed generators) is left exactly as it was, so a checkup never
changes the model it examines.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import keras

__all__ = ["get_adapter"]

_ADAPTERS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def get_adapter(backend: str | None = None) -> ModuleType:
    """Return the adapter module for ``backend`` (default: the active Keras backend)."""
    name = backend or keras.backend.backend()
    if name not in _ADAPTERS:
        raise ValueError(
            f"gradhealth supports the Keras backends {sorted(_ADAPTERS)}. Received: backend={name!r}"
        )
    return importlib.import_module(f"gradhealth.adapters.{_ADAPTERS[name]}_adapter")

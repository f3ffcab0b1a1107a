"""Save and restore a model's non-trainable state around a probe pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

__all__ = ["preserved_non_trainable_state"]


@contextlib.contextmanager
def preserved_non_trainable_state(model: keras.Model) -> Iterator[None]:
    """Restore every non-trainable variable (batch-norm statistics, RNG state) on exit.

    A forward pass with ``training=True`` updates batch-norm moving statistics and advances
    seed generators; a gradient checkup must not change the model it examines.
    """
    variables = list(model.non_trainable_variables)
    saved = [keras.ops.convert_to_numpy(v.value) for v in variables]
    try:
        yield
    finally:
        for v, value in zip(variables, saved, strict=True):
            v.assign(value)

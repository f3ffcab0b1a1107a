"""Save and restore a model's non-trainable state around a probe pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras

__all__ = ["preserved", "preserved_non_trainable_state", "state_variables"]


def state_variables(model: keras.Model, include_metrics: bool = True) -> list[Any]:
    """The variables a forward pass or a loss computation may change, each once.

    Non-trainable variables (batch-norm statistics, seed generators) and, with
    ``include_metrics``, metric variables (``compute_loss`` updates per-output loss trackers).
    """
    variables = list(model.non_trainable_variables)
    if include_metrics:
        variables += [v for v in getattr(model, "metrics_variables", []) or [] if _readable(v)]
    seen: set[int] = set()
    unique = []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            unique.append(v)
    return unique


def _readable(variable: Any) -> bool:
    # Metric variables created under a tf.distribute strategy are sync-on-read: outside the
    # strategy they cannot be read (nor restored). fit resets them at every epoch anyway.
    try:
        keras.ops.convert_to_numpy(variable.value)
    except (ValueError, TypeError, RuntimeError):
        return False
    return True


def preserved_non_trainable_state(model: keras.Model, include_metrics: bool = False
                                  ) -> contextlib.AbstractContextManager[None]:
    """Restore every non-trainable variable (batch-norm statistics, RNG state) on exit.

    A forward pass with ``training=True`` updates batch-norm moving statistics and advances
    seed generators; a gradient checkup must not change the model it examines. With
    ``include_metrics`` the model's metric variables are restored too.
    """
    return preserved(state_variables(model, include_metrics))


@contextlib.contextmanager
def preserved(variables: list[Any]) -> Iterator[None]:
    """Restore ``variables`` (e.g. :func:`state_variables`, read once) to their values on entry."""
    saved = [keras.ops.convert_to_numpy(v.value) for v in variables]
    try:
        yield
    finally:
        for v, value in zip(variables, saved, strict=True):
            v.assign(value)

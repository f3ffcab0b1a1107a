"""A conditional that is a plain Python branch when its predicate has a value.

``keras.ops.cond`` inside a compiled step (``jit``, ``tf.function``) is the device's branch. Run
eagerly (a stateful optimizer ``apply`` on JAX, a test, torch) it would trace and compile both
branches on every call on JAX; there the predicate already has a value, so one branch runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from keras import ops

__all__ = ["cond"]

T = TypeVar("T")


def cond(pred: Any, true_fn: Callable[[], T], false_fn: Callable[[], T]) -> T:
    """``true_fn()`` if ``pred`` else ``false_fn()``: a Python branch on a concrete predicate
    (Python bool, eager tensor), ``keras.ops.cond`` on a symbolic one (JAX tracer, TF graph).

    Args:
        pred: A boolean scalar: Python bool or tensor.
        true_fn: Called when ``pred`` is true.
        false_fn: Called when it is false; both return the same structure.

    Returns:
        What the chosen function returns.
    """
    try:
        concrete = bool(pred)
    except (TypeError, RuntimeError):  # a JAX tracer, a symbolic TF tensor, a torch meta tensor
        return ops.cond(pred, true_fn, false_fn)
    return true_fn() if concrete else false_fn()

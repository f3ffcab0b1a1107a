"""Argument checks shared by every module, with Keras-style messages (plain Python and NumPy).

Every check raises ``ValueError``/``TypeError`` naming the argument and echoing the value it
received, e.g. ``Argument `every` must be a positive integer. Received: every=0``.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["as_batch_array", "check_batch_pair", "check_choice", "check_positive_float",
           "check_positive_int", "short_repr"]


def short_repr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer >= 1, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"Argument `{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def check_positive_float(name: str, value: Any) -> float:
    """Return ``value`` as float if it is a finite number > 0, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        np.isfinite(value) and value > 0
    ):
        raise ValueError(
            f"Argument `{name}` must be a positive finite number. Received: {name}={value!r}"
        )
    return float(value)


def check_choice(name: str, value: Any, choices: tuple[Any, ...] | list[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    if value not in choices:
        raise ValueError(f"Argument `{name}` must be one of {list(choices)}. Received: {name}={value!r}")
    return value


def as_batch_array(name: str, value: Any, allow_int: bool = True) -> np.ndarray:
    """Convert one batch (``x`` or ``y``) to a NumPy array and check it.

    Args:
        name: The argument's name, for messages.
        value: Array-like batch; its first axis is the batch axis.
        allow_int: Whether integer dtypes are accepted (labels, token ids).

    Returns:
        The batch as an array; floating data is cast to float32.

    Raises:
        TypeError: If the data is not numeric.
        ValueError: If it is a scalar, an empty batch, or contains NaN/inf.
    """
    if value is None:
        raise ValueError(f"Argument `{name}` must be an array of batch data. Received: {name}=None")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise TypeError(
            f"Argument `{name}` must be a numeric array (ragged or mixed data cannot be used). "
            f"Received: {name}={short_repr(value)}"
        ) from e
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or (allow_int and np.issubdtype(arr.dtype, np.integer))
    ):
        raise TypeError(
            f"Argument `{name}` must hold numbers (float{' or int' if allow_int else ''}). "
            f"Received: {name}={short_repr(arr)}"
        )
    if arr.ndim == 0:
        raise ValueError(f"Argument `{name}` must have a batch axis. Received: {name}={short_repr(arr)}")
    if arr.shape[0] == 0:
        raise ValueError(
            f"Argument `{name}` is an empty batch; at least one example is needed. "
            f"Received: {name}={short_repr(arr)}"
        )
    if np.issubdtype(arr.dtype, np.floating):
        n_bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if n_bad:
            raise ValueError(
                f"Argument `{name}` contains {n_bad} non-finite value(s) (NaN or inf); gradients "
                f"of such a batch are meaningless. Received: {name}={short_repr(arr)}"
            )
        arr = arr.astype(np.float32, copy=False)
    return arr


def check_batch_pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``x`` and ``y`` together: both arrays, same number of examples."""
    xa = as_batch_array("x", x)
    ya = as_batch_array("y", y)
    if xa.shape[0] != ya.shape[0]:
        raise ValueError(
            "Arguments `x` and `y` must have the same number of examples (first axis). "
            f"Received: x.shape={xa.shape}, y.shape={ya.shape}"
        )
    return xa, ya

"""Argument checks shared by every module, with Keras-style messages (plain Python and NumPy).

Every check raises ``ValueError``/``TypeError`` naming the argument and echoing the value it
received, e.g. ``Argument `every` must be a positive integer. Received: every=0``.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["as_batch_array", "as_batch_structure", "batch_size_of", "check_batch",
           "check_batch_pair", "check_choice", "check_positive_float", "check_positive_int",
           "describe_shapes", "short_repr"]


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
    except (ValueError, TypeError, RuntimeError) as e:
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


def _is_structure(value: Any) -> bool:
    """Whether ``value`` is a container of batches (one per model input/output), as ``fit`` reads it.

    A dict is always a structure. A list or tuple is one when any element is an array, a tensor
    (anything with a ``shape``), a dict or ``None``: ``[x1, x2]`` feeds a two-input model and is
    never stacked into one array. A list of plain numbers or of nested number lists is one batch.
    """
    if isinstance(value, dict):
        return True
    if isinstance(value, (list, tuple)):
        return any(v is None or isinstance(v, (dict, list, tuple)) and _is_structure(v)
                   or hasattr(v, "shape") for v in value)
    return False


def as_batch_structure(name: str, value: Any, allow_int: bool = True) -> Any:
    """Check a batch that may be one array or a list/tuple/dict of them (a multi-input model).

    Each leaf is checked by :func:`as_batch_array` under its own name (``x[1]``,
    ``x['image']``), so a message points at the offending input.

    Args:
        name: The argument's name, for messages.
        value: One array-like, or a (nested) list/tuple/dict of array-likes.
        allow_int: Whether integer dtypes are accepted.

    Returns:
        The same structure (tuples become lists) with NumPy arrays as leaves.

    Raises:
        TypeError, ValueError: As :func:`as_batch_array`, for the first bad leaf; ValueError
            for an empty list/dict.
    """
    if not _is_structure(value):
        return as_batch_array(name, value, allow_int=allow_int)
    if not value:
        raise ValueError(f"Argument `{name}` is an empty {type(value).__name__}; it must hold "
                         f"at least one array. Received: {name}={value!r}")
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"Argument `{name}` must be a dict keyed by input/output names "
                                f"(strings). Received a key {key!r} of type {type(key).__name__}")
        return {k: as_batch_structure(f"{name}[{k!r}]", v, allow_int) for k, v in value.items()}
    return [as_batch_structure(f"{name}[{i}]", v, allow_int) for i, v in enumerate(value)]


def _leaves(value: Any, name: str) -> list[tuple[str, np.ndarray]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{name}[{k!r}]")]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, f"{name}[{i}]")]
    return [] if value is None else [(name, value)]


def batch_size_of(name: str, value: Any) -> int:
    """The common first-axis length of every array in a checked batch structure.

    Raises:
        ValueError: The arrays have different numbers of examples (names them).
    """
    leaves = _leaves(value, name)
    sizes = {leaf: int(arr.shape[0]) for leaf, arr in leaves}
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{leaf}.shape={arr.shape}" for leaf, arr in leaves)
        raise ValueError(f"Every array in argument `{name}` must have the same number of "
                         f"examples (first axis). Received: {detail}")
    return next(iter(sizes.values()))


def describe_shapes(value: Any) -> str:
    """The shapes of a checked batch structure, for messages: ``(8, 4)`` or ``[(8, 4), (8, 2)]``."""
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return str(value.shape)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {describe_shapes(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(describe_shapes(v) for v in value) + "]"


def check_batch(x: Any, y: Any = None, sample_weight: Any = None) -> tuple[Any, Any, Any]:
    """Validate one batch as ``fit`` takes it: inputs, targets and sample weights.

    Each may be one array or a list/dict of arrays (multi-input or multi-output models); ``y``
    and ``sample_weight`` may be None (a model trained by ``add_loss`` alone has no targets).
    Every array must have the same number of examples.

    Returns:
        ``(x, y, sample_weight)`` with NumPy leaves (floats as float32).

    Raises:
        TypeError: Non-numeric or ragged data.
        ValueError: Empty batches, non-finite values or different numbers of examples.
    """
    xa = as_batch_structure("x", x)
    ya = None if y is None else as_batch_structure("y", y)
    wa = None if sample_weight is None else as_batch_structure("sample_weight", sample_weight,
                                                                allow_int=True)
    n = batch_size_of("x", xa)
    for name, part in (("y", ya), ("sample_weight", wa)):
        if part is None:
            continue
        m = batch_size_of(name, part)
        if m != n:
            raise ValueError(
                f"Arguments `x` and `{name}` must have the same number of examples (first "
                f"axis). Received: x.shape={describe_shapes(xa)}, {name}.shape={describe_shapes(part)}")
    return xa, ya, wa

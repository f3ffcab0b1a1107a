"""Gradient statistics computed in float64 without underflow or overflow.

Why not ``np.linalg.norm`` in float32 (or ``tf.norm``)? In a 30-layer sigmoid MLP the first
layer's gradient entries are about 1e-20; squaring them in float32 gives 1e-40, below the smallest
float32 normal (1.2e-38), so the sum of squares flushes to zero and the norm is reported as exactly
0.0. Every statistic here is computed in float64 after dividing by the largest finite magnitude,
so entries from 1e-300 to 1e300 give norms with relative error near machine epsilon and a
non-zero tensor never gets a zero norm.

Non-finite entries (NaN, +-inf) are counted in ``nonfinite_count`` and left out of every other
statistic, so one poisoned entry does not hide the state of the rest of the tensor.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

STAT_COLUMNS: tuple[str, ...] = (
    "grad_norm",
    "grad_mean_abs",
    "grad_max_abs",
    "grad_std",
    "zero_fraction",
    "nonfinite_count",
    "weight_norm",
    "grad_to_weight",
    "dead_unit_fraction",
)


def _finite_f64(a: Any) -> tuple[np.ndarray, int]:
    """Return the finite entries of ``a`` as a flat float64 array and the non-finite count."""
    arr = np.asarray(a, dtype=np.float64).ravel()
    mask = np.isfinite(arr)
    n_bad = int(arr.size - np.count_nonzero(mask))
    return (arr if n_bad == 0 else arr[mask]), n_bad


def robust_norm(a: Any) -> float:
    """L2 norm of the finite entries of ``a``, exact to float64 precision at any scale.

    The array is scaled by its largest finite magnitude ``m`` before squaring, so
    ``norm = m * sqrt(sum((a / m) ** 2))`` never underflows or overflows.

    Args:
        a: Array-like of any shape and float dtype.

    Returns:
        The norm as a Python float; 0.0 only when every finite entry is zero.

    Example:
        >>> robust_norm(np.full(4, 1e-20, dtype=np.float32))  # float32 tf.norm gives 0.0
        2e-20
    """
    flat, _ = _finite_f64(a)
    return _scaled_norm(flat)


def _scaled_norm(flat: np.ndarray) -> float:
    if flat.size == 0:
        return 0.0
    m = float(np.max(np.abs(flat)))
    if m == 0.0:
        return 0.0
    scaled = flat / m
    return m * math.sqrt(float(np.dot(scaled, scaled)))


def dead_unit_fraction(grad: Any) -> float:
    """Fraction of output units whose gradient is exactly zero in every entry.

    A unit is a slice along the last axis (the output units of Keras ``Dense`` and ``Conv``
    kernels, and each entry of a bias). A unit whose whole gradient is exactly 0.0 received no
    signal on this batch: for ReLU networks it is a "dead" unit (Lu et al. 2019, "Dying ReLU and
    Initialization"). Non-finite entries count as non-zero.

    Args:
        grad: Gradient array of a variable.

    Returns:
        A fraction in [0, 1]; 0.0 for a scalar or empty array.
    """
    g = np.asarray(grad)
    if g.ndim == 0 or g.size == 0:
        return 0.0
    units = g.reshape(-1, g.shape[-1]) if g.ndim >= 2 else g.reshape(1, -1)
    dead = np.all(units == 0, axis=0)
    return float(np.mean(dead))


def tensor_stats(grad: Any, weight: Any | None = None) -> dict[str, float]:
    """All statistics gradhealth reports for one gradient tensor.

    Args:
        grad: The gradient of one variable (any shape).
        weight: The variable's current value, for ``weight_norm`` and ``grad_to_weight``.

    Returns:
        A dict with the keys of ``STAT_COLUMNS``:
        ``grad_norm`` (L2 over finite entries), ``grad_mean_abs``, ``grad_max_abs``,
        ``grad_std`` (population std of the finite entries), ``zero_fraction`` (exact zeros over
        all entries), ``nonfinite_count``, ``weight_norm``, ``grad_to_weight``
        (``grad_norm / weight_norm``; NaN when the weight norm is zero) and
        ``dead_unit_fraction``.

    Example:
        >>> s = tensor_stats(np.array([3.0, 4.0]), np.array([1.0, 0.0]))
        >>> s["grad_norm"], s["grad_to_weight"]
        (5.0, 5.0)
    """
    garr = np.asarray(grad)
    flat, n_bad = _finite_f64(garr)
    size = int(garr.size)
    if flat.size:
        m = float(np.max(np.abs(flat)))
        if m > 0.0:
            scaled = flat / m
            norm = m * math.sqrt(float(np.dot(scaled, scaled)))
            mean_abs = m * float(np.mean(np.abs(scaled)))
            std = m * float(np.std(scaled))
        else:
            norm = mean_abs = std = 0.0
        max_abs = m
    else:
        norm = mean_abs = max_abs = std = float("nan") if size else 0.0
    zero_fraction = float(np.count_nonzero(garr == 0)) / size if size else 0.0
    weight_norm = robust_norm(weight) if weight is not None else float("nan")
    ratio = norm / weight_norm if weight_norm and weight_norm > 0 else float("nan")
    return {
        "grad_norm": norm,
        "grad_mean_abs": mean_abs,
        "grad_max_abs": max_abs,
        "grad_std": std,
        "zero_fraction": zero_fraction,
        "nonfinite_count": n_bad,
        "weight_norm": weight_norm,
        "grad_to_weight": ratio,
        "dead_unit_fraction": dead_unit_fraction(garr),
    }


def combine_norms(norms: Any) -> float:
    """L2 norm of a list of L2 norms (the norm of the concatenated tensors), without underflow."""
    return _scaled_norm(np.asarray([n for n in np.ravel(norms) if np.isfinite(n)], dtype=np.float64))

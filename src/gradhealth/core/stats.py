"""Gradient statistics computed in float64 without underflow or overflow.

Why not ``np.linalg.norm`` in float32 (or ``tf.norm``)? In a 30-layer sigmoid MLP the first
layer's gradient entries are about 1e-20; squaring them in float32 gives 1e-40, below the smallest
float32 normal (1.2e-38), so the sum of squares flushes to zero (TensorFlow flushes subnormals)
and the norm is reported as exactly 0.0. Every statistic here divides by the largest finite
magnitude first and accumulates in float64, so entries from 1e-30 to 1e30 (and beyond) give
relative errors near 1e-7, and a non-zero tensor never gets a zero norm.

Non-finite entries (NaN, +-inf) are counted in ``nonfinite_count`` and left out of every other
statistic, so one poisoned entry does not hide the state of the rest of the tensor.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["CORE_STATS", "DEVICE_STATS", "DIRECT_MAX", "STAT_COLUMNS", "ZERO_CHECK_BELOW",
           "combine_norms", "dead_unit_fraction", "direct_floor", "robust_norm", "tensor_stats"]

DEVICE_STATS: tuple[str, ...] = ("grad_norm", "grad_mean_abs", "grad_max_abs", "grad_std",
                                 "zero_fraction", "nonfinite_count", "weight_norm",
                                 "dead_unit_fraction")
"""The statistics reduced on the device per variable (``grad_to_weight`` is their ratio)."""

CORE_STATS: tuple[str, ...] = ("grad_norm", "grad_max_abs", "nonfinite_count", "weight_norm")
"""The statistics the monitor logs by default: what its explosion detectors, its ``status``
column, ``grad_to_weight`` and the TensorBoard histograms need. One pass over each gradient
(sum of squares and largest magnitude together) and one over each weight."""

DIRECT_MAX: float = 2.0 ** 40
"""Largest ``max |g|`` whose float32 sums of squares need no scaling: ``n * m^2`` stays below
float32's 3.4e38 for any ``n < 2^47``."""

ZERO_CHECK_BELOW: int = 16384
"""Variables with fewer entries than this get one more test in the one-pass statistics: is the
weight all zeros? (Its sum of squares is then 0 and exact, where a zero sum could also mean
entries too small to square in float32.) Every fresh model has such variables (biases,
normalization offsets); for a large variable the test would be one more pass per step."""


def direct_floor(size: int) -> float:
    """Smallest ``max |g|`` of ``size`` entries whose unscaled float32 sum of squares loses
    < 1e-6 of its value to underflow: each square below float32's smallest normal (2^-126) is
    at most 2^-126, so ``n`` of them weigh ``n 2^-126 <= 2^-20 m^2`` when
    ``m >= sqrt(n) 2^-53``. (Squared, it bounds a weight's sum of squares the same way.)"""
    return math.sqrt(max(size, 1)) * 2.0 ** -53


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
    arr = np.asarray(a)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    flat = arr.reshape(-1)
    if not np.isfinite(flat).all():
        flat = flat[np.isfinite(flat)]
    return _scaled_norm(flat)


def _scaled_norm(flat: np.ndarray) -> float:
    if flat.size == 0:
        return 0.0
    m = float(np.max(np.abs(flat)))
    if m == 0.0:
        return 0.0
    scaled = flat / flat.dtype.type(m) if m < 1e300 else flat / m
    return m * math.sqrt(float(np.sum(scaled * scaled, dtype=np.float64)))


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
    alive = np.any(units, axis=0)  # NaN is truthy: non-finite entries count as alive
    return 1.0 - float(np.count_nonzero(alive)) / alive.size


def tensor_stats(grad: Any, weight: Any | None = None) -> dict[str, float]:
    """All statistics gradhealth reports for one gradient tensor.

    The tensor is scaled by its largest finite magnitude ``m`` first, so every intermediate is in
    [-1, 1]: squares cannot overflow, and an entry small enough for its square to underflow
    (``|g| < 1e-19 m``) contributes less than 1e-38 of the total. Sums are accumulated in float64
    (pairwise), giving relative errors near 1e-7 at any scale.

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
    if not np.issubdtype(garr.dtype, np.floating):
        garr = garr.astype(np.float64)
    size = int(garr.size)
    flat = garr.reshape(-1)
    if np.isfinite(flat).all():
        n_bad = 0
    else:
        mask = np.isfinite(flat)
        n_bad = int(size - np.count_nonzero(mask))
        flat = flat[mask]
    norm = mean_abs = max_abs = std = float("nan") if size else 0.0
    if flat.size:
        max_abs = float(np.max(np.abs(flat)))
        if max_abs > 0.0:
            # Scaled by a power of two near max_abs (exact): dividing by max_abs itself rounds
            # every entry, which for entries far from zero (mean >> std) becomes a 1e-6 error
            # in the standard deviation.
            exponent = math.frexp(max_abs)[1]
            unit = math.ldexp(1.0, exponent)
            scaled = np.ldexp(flat.astype(np.float64), -exponent)
            norm = unit * math.sqrt(float(np.sum(scaled * scaled)))
            mean_abs = unit * float(np.sum(np.abs(scaled))) / flat.size
            std = unit * float(np.std(scaled))
        else:
            norm = mean_abs = std = 0.0
    zero_fraction = (size - np.count_nonzero(garr)) / size if size else 0.0
    weight_norm = robust_norm(weight) if weight is not None else float("nan")
    ratio = norm / weight_norm if weight_norm and weight_norm > 0 else float("nan")
    return {
        "grad_norm": norm,
        "grad_mean_abs": mean_abs,
        "grad_max_abs": max_abs,
        "grad_std": std,
        "zero_fraction": float(zero_fraction),
        "nonfinite_count": n_bad,
        "weight_norm": weight_norm,
        "grad_to_weight": ratio,
        "dead_unit_fraction": dead_unit_fraction(garr),
    }


def combine_norms(norms: Any) -> float:
    """L2 norm of a list of L2 norms (the norm of the concatenated tensors), without underflow."""
    return _scaled_norm(np.asarray([n for n in np.ravel(norms) if np.isfinite(n)], dtype=np.float64))

"""Weight-variance formulas of the classic initializers and mean-field variance propagation.

Plain NumPy (never imports keras). Three questions are answered here:

1. *What variance should a kernel drawn by initializer X have?* :func:`expected_weight_variance`
   implements the formulas of Glorot & Bengio (2010), He et al. (2015) and LeCun et al. (1998),
   with the fans computed exactly as Keras computes them (:func:`compute_fans`).
2. *What happens to a signal pushed through such a layer and a non-linearity?*
   :func:`gaussian_expectation` computes ``E[f(z)]`` for ``z ~ N(0, q)`` by Gauss-Hermite
   quadrature, and :func:`propagate_variance` iterates the mean-field recursion
   ``q_l = n_in * Var(W) * E[phi(z)^2]`` (forward) and ``g_l = n_out * Var(W) * E[phi'(z)^2]``
   (backward, per layer) of Poole et al. (2016) and Schoenholz et al. (2017).
3. *How far apart are the first and last layers?* :func:`spread` is the max/min ratio used by
   the tests and notebooks ("within a factor of 2").

References:
    LeCun, Bottou, Orr & Müller (1998), "Efficient BackProp".
    Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward neural
    networks", AISTATS.
    He, Zhang, Ren & Sun (2015), "Delving Deep into Rectifiers", ICCV.
    Saxe, McClelland & Ganguli (2014), "Exact solutions to the nonlinear dynamics of learning in
    deep linear neural networks" (orthogonal initialization).
    Poole et al. (2016), "Exponential expressivity in deep neural networks through transient
    chaos"; Schoenholz et al. (2017), "Deep Information Propagation".
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["KNOWN_INITIALIZERS", "QUADRATURE_POINTS", "QUADRATURE_RANGE",
           "VARIANCE_SCALING_RULES", "compute_fans", "expected_weight_variance",
           "gaussian_expectation", "propagate_variance", "spread"]

#: Variance-scaling rules ``Var(W) = scale / fan``: (scale, which fan), one per initializer name.
#: Uniform and (truncated) normal draws with the same rule have the same variance: Keras divides
#: the truncated normal's stddev by 0.8796 so that truncation at 2 sigma does not shrink it.
VARIANCE_SCALING_RULES: dict[str, tuple[float, str]] = {
    "glorot_uniform": (1.0, "fan_avg"),  # Glorot & Bengio 2010, eq. 12: 2 / (n_in + n_out)
    "glorot_normal": (1.0, "fan_avg"),
    "he_uniform": (2.0, "fan_in"),  # He et al. 2015, eq. 10: 2 / n_in (ReLU halves E[x^2])
    "he_normal": (2.0, "fan_in"),
    "lecun_uniform": (1.0, "fan_in"),  # LeCun et al. 1998, section 4.6: 1 / n_in
    "lecun_normal": (1.0, "fan_in"),
}

#: Every initializer name whose expected variance this module knows, in catalog order.
KNOWN_INITIALIZERS: tuple[str, ...] = (
    *VARIANCE_SCALING_RULES,
    "orthogonal",
    "random_normal",
    "random_uniform",
)

#: Quadrature for Gaussian expectations: the trapezoid rule on [-12, 12] standard deviations
#: (the mass beyond is 4e-33) with 24000 points. Gauss-Hermite would be exact for polynomials
#: but is off by 2e-3 for E[relu(z)]: it assumes a smooth integrand, and every activation in the
#: catalog with a kink has it at 0. The trapezoid rule is exponentially accurate for smooth
#: Gaussian integrands and O(h^2) ~ 1e-7 at a kink; an even number of points keeps 0 off the
#: symmetric grid, so a step at 0 (ReLU's derivative, whatever its value at 0) gets exactly 1/2.
QUADRATURE_RANGE: float = 12.0
QUADRATURE_POINTS: int = 24000


def compute_fans(shape: Sequence[int]) -> tuple[float, float]:
    """Fan-in and fan-out of a kernel shape, exactly as Keras computes them.

    A Dense kernel ``(n_in, n_out)`` has fans ``(n_in, n_out)``; a convolution kernel
    ``(*spatial, c_in, c_out)`` multiplies both by the receptive field size ``prod(spatial)``.

    Args:
        shape: The kernel shape.

    Returns:
        ``(fan_in, fan_out)`` as floats.

    Raises:
        ValueError: ``shape`` has a non-positive dimension.

    Example:
        >>> compute_fans((3, 3, 16, 32))
        (144.0, 288.0)
    """
    shape = tuple(int(s) for s in shape)
    if any(s <= 0 for s in shape):
        raise ValueError(f"Argument `shape` must have positive dimensions. Received: shape={shape}")
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    receptive = float(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


def expected_weight_variance(initializer: str, shape: Sequence[int], **params: float) -> float:
    """The variance a kernel of ``shape`` drawn by ``initializer`` has in expectation.

    Args:
        initializer: One of :data:`KNOWN_INITIALIZERS` (Keras' snake-case names).
        shape: The kernel shape (Keras layout: inputs on axis -2, outputs on axis -1).
        **params: ``gain`` for ``orthogonal`` (default 1), ``stddev`` for ``random_normal``
            (default 0.05, Keras' default), ``minval``/``maxval`` for ``random_uniform``
            (default -0.05/0.05).

    Returns:
        The expected variance of one entry.

    Raises:
        ValueError: Unknown initializer name (the message lists the valid ones).

    Example:
        >>> expected_weight_variance("he_normal", (100, 10))
        0.02

    References:
        Glorot & Bengio (2010); He et al. (2015); LeCun et al. (1998); Saxe et al. (2014).
    """
    fan_in, fan_out = compute_fans(shape)
    if initializer in VARIANCE_SCALING_RULES:
        scale, mode = VARIANCE_SCALING_RULES[initializer]
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
        return scale / fan
    if initializer == "orthogonal":
        # Keras flattens the kernel to (rows, cols) = (prod(shape[:-1]), shape[-1]) and makes the
        # shorter side orthonormal: each of the min(rows, cols) unit vectors spreads its squared
        # norm 1 over max(rows, cols) entries, so the mean square of an entry is 1 / max(.).
        rows = float(np.prod(shape[:-1])) if len(shape) > 1 else 1.0
        cols = float(shape[-1]) if len(shape) else 1.0
        gain = float(params.get("gain", 1.0))
        return gain**2 / max(rows, cols)
    if initializer == "random_normal":
        return float(params.get("stddev", 0.05)) ** 2
    if initializer == "random_uniform":
        low, high = float(params.get("minval", -0.05)), float(params.get("maxval", 0.05))
        return (high - low) ** 2 / 12.0
    raise ValueError(
        f"Unknown initializer {initializer!r}. Valid names are {list(KNOWN_INITIALIZERS)}. "
        f"Received: initializer={initializer!r}"
    )


@functools.lru_cache(maxsize=8)
def _standard_grid(points: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-QUADRATURE_RANGE, QUADRATURE_RANGE, points)
    w = np.exp(-x**2 / 2) / math.sqrt(2.0 * math.pi) * (x[1] - x[0])
    w[0] *= 0.5
    w[-1] *= 0.5
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def gaussian_expectation(fn: Callable[[np.ndarray], Any], variance: float = 1.0,
                         points: int = QUADRATURE_POINTS) -> float:
    """``E[fn(z)]`` for ``z ~ N(0, variance)`` by the trapezoid rule (see QUADRATURE_POINTS).

    Args:
        fn: A vectorized function of a float64 NumPy array.
        variance: Variance of the Gaussian (> 0).
        points: Number of grid points (even keeps 0 off the grid).

    Returns:
        The expectation as a float.

    Raises:
        ValueError: ``variance`` is not a positive finite number or ``points`` < 3.

    Example:
        >>> round(gaussian_expectation(lambda z: np.maximum(z, 0) ** 2), 6)  # E[relu(z)^2]
        0.5
    """
    if isinstance(variance, bool) or not (
        isinstance(variance, (int, float, np.floating)) and math.isfinite(variance) and variance > 0
    ):
        raise ValueError(
            f"Argument `variance` must be a positive finite number. Received: variance={variance!r}"
        )
    if int(points) < 3:
        raise ValueError(f"Argument `points` must be at least 3. Received: points={points!r}")
    x, w = _standard_grid(int(points))
    values = np.asarray(fn(x * math.sqrt(variance)), dtype=np.float64)
    return float(np.dot(w, values))


def propagate_variance(phi: Callable[[np.ndarray], Any], dphi: Callable[[np.ndarray], Any],
                       weight_variances: Sequence[float], fan_ins: Sequence[float],
                       fan_outs: Sequence[float] | None = None, input_second_moment: float = 1.0,
                       ) -> dict[str, np.ndarray]:
    """Mean-field prediction of pre-activation and gradient variance, layer by layer.

    For an MLP ``z_l = W_l h_{l-1}``, ``h_l = phi(z_l)`` with i.i.d. zero-mean weights and large
    width, the pre-activations are Gaussian with variance

    ``q_1 = n_in,1 Var(W_1) E[x^2]``,   ``q_l = n_in,l Var(W_l) E[phi(z)^2], z ~ N(0, q_{l-1})``,

    and the variance of the back-propagated gradient ``dL/dz`` is multiplied, going from layer
    ``l+1`` down to layer ``l``, by ``chi_l = n_out,l+1 Var(W_{l+1}) E[phi'(z_l)^2]`` (the sum
    ``W_{l+1}^T dL/dz_{l+1}`` runs over the ``n_out`` units of layer ``l+1``)
    (Glorot & Bengio 2010, eqs. 5-6; He et al. 2015, eq. 13).

    Args:
        phi: The activation, vectorized over float64 NumPy arrays.
        dphi: Its derivative.
        weight_variances: ``Var(W_l)`` for each layer ``l = 1..L``.
        fan_ins: ``n_in`` of each layer.
        fan_outs: ``n_out`` of each layer (defaults to the next layer's ``n_in``, and the last
            layer's ``n_in`` for the last layer).
        input_second_moment: ``E[x^2]`` of the network input.

    Returns:
        ``{"forward_variance": q (L,), "backward_variance": g (L,)}`` where ``g`` is the gradient
        variance at each layer relative to the last layer's (``g[-1] == 1``).

    Raises:
        ValueError: The sequences have different lengths or are empty.

    References:
        Glorot & Bengio (2010); He et al. (2015); Poole et al. (2016); Schoenholz et al. (2017).
    """
    wv = np.asarray(weight_variances, dtype=np.float64)
    fi = np.asarray(fan_ins, dtype=np.float64)
    if wv.ndim != 1 or wv.size == 0 or fi.shape != wv.shape:
        raise ValueError(
            "Arguments `weight_variances` and `fan_ins` must be non-empty sequences of the same "
            f"length. Received: len(weight_variances)={wv.size}, len(fan_ins)={fi.size}"
        )
    fo = np.append(fi[1:], fi[-1]) if fan_outs is None else np.asarray(fan_outs, dtype=np.float64)
    if fo.shape != wv.shape:
        raise ValueError(
            "Argument `fan_outs` must have one entry per layer. "
            f"Received: len(fan_outs)={fo.size}, layers={wv.size}"
        )
    depth = wv.size
    q = np.empty(depth)
    second = float(input_second_moment)
    for layer in range(depth):
        q[layer] = fi[layer] * wv[layer] * second
        second = gaussian_expectation(lambda z: np.square(phi(z)), q[layer]) if q[layer] > 0 else 0.0
    g = np.ones(depth)
    for layer in range(depth - 2, -1, -1):
        slope = gaussian_expectation(lambda z: np.square(dphi(z)), q[layer]) if q[layer] > 0 else 0.0
        g[layer] = g[layer + 1] * fo[layer + 1] * wv[layer + 1] * slope
    return {"forward_variance": q, "backward_variance": g}


def spread(values: Sequence[float]) -> float:
    """Ratio of the largest to the smallest of positive ``values`` (1.0 = perfectly flat).

    Non-finite or non-positive values make the spread infinite: a variance that collapsed to
    zero or overflowed is infinitely far from the others.

    Args:
        values: Per-layer variances or norms.

    Returns:
        ``max / min`` as a float, ``inf`` when any value is zero, negative or non-finite.

    Example:
        >>> spread([1.0, 2.0, 0.5])
        4.0
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("Argument `values` must not be empty. Received: values=[]")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        return math.inf
    return float(arr.max() / arr.min())

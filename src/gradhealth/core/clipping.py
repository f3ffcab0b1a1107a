"""Gradient clipping rules on lists of NumPy arrays (float64 maths, no underflow).

Every function takes a list of gradient arrays (``None`` entries -- variables with no gradient,
such as frozen or unused ones -- pass through untouched) and returns new arrays of the input
dtypes; nothing is modified in place. The Keras-facing versions that run inside ``model.fit``
live in :mod:`gradhealth.core.clipping`.

References:
    Pascanu, Mikolov & Bengio (2013). On the difficulty of training recurrent neural networks.
    ICML. https://arxiv.org/abs/1211.5063 (norm clipping, Algorithm 1).
    Brock, De, Smith & Simonyan (2021). High-Performance Large-Scale Image Recognition Without
    Normalization. ICML. https://arxiv.org/abs/2102.06171 (adaptive gradient clipping, AGC).
    Seetharaman, Wichern, Pardo & Le Roux (2020). AutoClip: Adaptive Gradient Clipping for
    Source Separation Networks. MLSP. https://arxiv.org/abs/2007.14469
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gradhealth._internal.validation import check_positive_float
from gradhealth.core.stats import combine_norms, robust_norm

__all__ = ["DEFAULT_AGC_CLIP_FACTOR", "DEFAULT_AGC_EPS", "DEFAULT_AUTOCLIP_PERCENTILE",
           "AutoClip", "adaptive_clip", "clip_by_global_norm", "clip_by_norm", "clip_by_value",
           "global_norm", "unitwise_norm"]

DEFAULT_AGC_CLIP_FACTOR: float = 0.01
"""AGC's ``lambda``: Brock et al. (2021) use 0.01 for their NFNets at batch size 4096 and
found smaller batches tolerate larger values; 0.01 is the conservative default (also optax's)."""

DEFAULT_AGC_EPS: float = 1e-3
"""AGC's floor on a unit's weight norm (Brock et al. 2021, eq. 3, ``epsilon = 1e-3``): without
it, a unit initialised at zero (a bias) could never receive a non-zero update."""

DEFAULT_AUTOCLIP_PERCENTILE: float = 10.0
"""AutoClip's percentile: Seetharaman et al. (2020) report p = 10 as their best setting."""

_TINY = 1e-300
"""Division guard in float64 for an all-zero unit: its gradient is zero, so any positive
denominator leaves it zero; 1e-300 is far below every norm a float32/float64 gradient can have
except exactly zero."""

Grads = Sequence[Any]


def _f64(g: Any) -> np.ndarray:
    return np.asarray(g, dtype=np.float64)


def _out(clipped: np.ndarray, like: Any) -> np.ndarray:
    dtype = np.asarray(like).dtype
    return clipped.astype(dtype if np.issubdtype(dtype, np.floating) else np.float64)


def clip_by_value(grads: Grads, clip_value: float) -> list[np.ndarray | None]:
    """Clip every gradient entry into ``[-clip_value, clip_value]``.

    Args:
        grads: Gradient arrays (``None`` entries pass through).
        clip_value: Positive bound.

    Returns:
        The clipped arrays. NaN entries stay NaN; +-inf become +-clip_value.

    Example:
        >>> clip_by_value([np.array([-3.0, 0.5, 2.0])], 1.0)[0]
        array([-1. ,  0.5,  1. ])
    """
    c = check_positive_float("clip_value", clip_value)
    return [None if g is None else _out(np.clip(_f64(g), -c, c), g) for g in grads]


def clip_by_norm(grads: Grads, max_norm: float) -> list[np.ndarray | None]:
    """Rescale each gradient tensor separately so its L2 norm is at most ``max_norm``.

    ``g <- g * max_norm / ||g||`` when ``||g|| > max_norm`` (Keras' ``clipnorm``). The norm is
    over finite entries (:func:`gradhealth.core.stats.robust_norm`); a tensor holding NaN/inf
    is left unchanged, since no rescaling makes it usable.

    Args:
        grads: Gradient arrays (``None`` entries pass through).
        max_norm: Positive limit on each tensor's norm.

    Returns:
        The clipped arrays.

    Example:
        >>> clip_by_norm([np.array([3.0, 4.0])], 1.0)[0]
        array([0.6, 0.8])
    """
    c = check_positive_float("max_norm", max_norm)
    out: list[np.ndarray | None] = []
    for g in grads:
        if g is None:
            out.append(None)
            continue
        a = _f64(g)
        n = robust_norm(a)
        scale = c / n if (n > c and np.all(np.isfinite(a))) else 1.0
        out.append(_out(a * scale, g))
    return out


def global_norm(grads: Grads) -> float:
    """L2 norm of all gradients together, as if concatenated into one vector.

    Args:
        grads: Gradient arrays (``None`` entries are skipped).

    Returns:
        The norm in float64 (scaled, so no underflow); NaN if any entry is NaN, inf if any is
        infinite and none is NaN.
    """
    arrays = [_f64(g) for g in grads if g is not None]
    if any(np.isnan(a).any() for a in arrays):
        return math.nan
    if any(np.isinf(a).any() for a in arrays):
        return math.inf
    return combine_norms([robust_norm(a) for a in arrays])


def clip_by_global_norm(grads: Grads, max_norm: float
                        ) -> tuple[list[np.ndarray | None], float]:
    """Rescale all gradients by one factor so their global norm is at most ``max_norm``.

    Pascanu et al. (2013), Algorithm 1: if ``||g|| > max_norm`` then
    ``g <- g * max_norm / ||g||``, with ``||g||`` the norm of all gradients concatenated, so the
    update keeps its direction. When the global norm is not finite the gradients are returned
    unchanged (rescaling cannot repair them; skip the step instead -- the monitor does).

    Args:
        grads: Gradient arrays (``None`` entries pass through).
        max_norm: Positive limit on the global norm.

    Returns:
        ``(clipped, norm)``: the clipped arrays and the global norm *before* clipping.

    Example:
        >>> clipped, norm = clip_by_global_norm([np.array([3.0]), np.array([4.0])], 1.0)
        >>> norm, [round(float(c[0]), 6) for c in clipped]
        (5.0, [0.6, 0.8])
    """
    c = check_positive_float("max_norm", max_norm)
    norm = global_norm(grads)
    scale = c / norm if (math.isfinite(norm) and norm > c) else 1.0
    return [None if g is None else _out(_f64(g) * scale, g) for g in grads], norm


def unitwise_norm(x: Any) -> np.ndarray:
    """L2 norm of each output unit of a parameter or gradient, broadcastable against ``x``.

    A unit is a slice along the last axis, the output axis of Keras ``Dense`` kernels
    ``(in, out)`` and ``Conv`` kernels ``(*window, in, out)``: the norm is taken over every
    other axis, keeping them as size-1 axes. A scalar or 1-D array (a bias, a batch-norm scale)
    has one entry per unit, so its unit-wise norm is ``|x|`` (as in Brock et al. 2021 and
    optax's ``unitwise_norm``). Computed in float64 after scaling by each unit's largest entry.

    Args:
        x: An array of any shape.

    Returns:
        A float64 array of shape ``(1, ..., 1, units)`` for ``ndim >= 2``, else ``|x|``.

    Example:
        >>> unitwise_norm(np.array([[3.0, 0.0], [4.0, 1.0]]))
        array([[5., 1.]])
    """
    a = _f64(x)
    if a.ndim <= 1:
        return np.abs(a)
    axes = tuple(range(a.ndim - 1))
    m = np.max(np.abs(a), axis=axes, keepdims=True)
    safe = np.where(m > 0, m, 1.0)
    return m * np.sqrt(np.sum((a / safe) ** 2, axis=axes, keepdims=True))


def adaptive_clip(grads: Grads, params: Grads, clip_factor: float = DEFAULT_AGC_CLIP_FACTOR,
                  eps: float = DEFAULT_AGC_EPS) -> list[np.ndarray | None]:
    """Adaptive gradient clipping (AGC), unit by unit.

    For each output unit ``i`` (see :func:`unitwise_norm`) with gradient ``G_i`` and weights
    ``W_i``: if ``||G_i|| / max(||W_i||, eps) > clip_factor`` then
    ``G_i <- G_i * clip_factor * max(||W_i||, eps) / ||G_i||`` (Brock et al. 2021, eq. 3). The
    limit scales with the weights, so a unit never moves by more than ``clip_factor`` of its own
    size per unit learning rate, whatever the layer's scale.

    Args:
        grads: Gradient arrays (``None`` entries pass through).
        params: The matching parameter values, same shapes, same order.
        clip_factor: The ratio limit ``lambda`` (default :data:`DEFAULT_AGC_CLIP_FACTOR`).
        eps: Floor on the weight norm (default :data:`DEFAULT_AGC_EPS`): it keeps zero-
            initialised units (biases) trainable, since their limit is ``clip_factor * eps``
            rather than 0.

    Returns:
        The clipped arrays.

    Raises:
        ValueError: If the lists differ in length or a gradient's shape differs from its
            parameter's.

    Example:
        >>> g = adaptive_clip([np.array([[1.0], [0.0]])], [np.array([[1.0], [0.0]])], 0.1)
        >>> g[0].ravel()
        array([0.1, 0. ])
    """
    lam = check_positive_float("clip_factor", clip_factor)
    eps = check_positive_float("eps", eps)
    if len(grads) != len(params):
        raise ValueError(
            "Arguments `grads` and `params` must have the same length. "
            f"Received: len(grads)={len(grads)}, len(params)={len(params)}"
        )
    out: list[np.ndarray | None] = []
    for i, (g, p) in enumerate(zip(grads, params, strict=True)):
        if g is None:
            out.append(None)
            continue
        ga, pa = _f64(g), _f64(p)
        if ga.shape != pa.shape:
            raise ValueError(
                f"Gradient {i} has shape {ga.shape} but its parameter has shape {pa.shape}. "
                "Pass `params` in the same order as `grads`."
            )
        max_norm = lam * np.maximum(unitwise_norm(pa), eps)
        g_norm = unitwise_norm(ga)
        scale = np.where(g_norm > max_norm, max_norm / np.maximum(g_norm, _TINY), 1.0)
        out.append(_out(ga * scale, g))
    return out


class AutoClip:
    """AutoClip: clip the global norm to the p-th percentile of all norms seen so far.

    At every step the current global gradient norm is appended to the history, then the
    gradients are clipped by global norm to ``np.percentile(history, percentile)`` (linear
    interpolation, as in the authors' reference code). The limit adapts to the run: no
    threshold to tune, and a sudden spike is cut to the size of typical past gradients.
    Non-finite norms are not added to the history.

    Args:
        percentile: ``p`` in [0, 100] (default :data:`DEFAULT_AUTOCLIP_PERCENTILE`).

    Example:
        >>> ac = AutoClip(percentile=50)
        >>> _ = ac.clip([np.array([1.0])]); _ = ac.clip([np.array([3.0])])
        >>> clipped, limit = ac.clip([np.array([100.0])])
        >>> limit, float(clipped[0][0])
        (3.0, 3.0)

    References:
        Seetharaman et al. (2020), https://arxiv.org/abs/2007.14469
    """

    def __init__(self, percentile: float = DEFAULT_AUTOCLIP_PERCENTILE) -> None:
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not (
            0 <= percentile <= 100
        ):
            raise ValueError(
                f"Argument `percentile` must be a number in [0, 100]. Received: percentile={percentile!r}"
            )
        self.percentile = float(percentile)
        self.reset()

    def reset(self) -> None:
        """Forget the history of norms."""
        self._history: list[float] = []

    @property
    def history(self) -> np.ndarray:
        """The global norms seen so far (float64)."""
        return np.asarray(self._history, dtype=np.float64)

    @property
    def threshold(self) -> float:
        """The current clipping limit (NaN before the first finite norm)."""
        if not self._history:
            return math.nan
        return float(np.percentile(self.history, self.percentile))

    def clip(self, grads: Grads) -> tuple[list[np.ndarray | None], float]:
        """Record this step's global norm and clip the gradients to the updated percentile.

        Args:
            grads: Gradient arrays (``None`` entries pass through).

        Returns:
            ``(clipped, limit)``: the clipped arrays and the limit used.
        """
        norm = global_norm(grads)
        if math.isfinite(norm):
            self._history.append(norm)
        limit = self.threshold
        if not (math.isfinite(limit) and limit > 0):
            return [None if g is None else _out(_f64(g), g) for g in grads], limit
        clipped, _ = clip_by_global_norm(grads, limit)
        return clipped, limit

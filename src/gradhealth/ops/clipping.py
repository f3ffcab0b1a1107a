"""Gradient norms and clipping on the device with ``keras.ops`` (every backend).

The device counterparts of :mod:`gradhealth.core.clipping`, shared by
:class:`gradhealth.optim.ClippingOptimizer`, the monitoring optimizer and the checkup. Norms
are computed in float32 with max-abs scaling (``m * sqrt(sum((g / m) ** 2))``), so tiny
gradients never underflow to a zero norm: this is the one scaled-norm routine of the package.

References:
    Pascanu, Mikolov & Bengio (2013), https://arxiv.org/abs/1211.5063
    Brock, De, Smith & Simonyan (2021), https://arxiv.org/abs/2102.06171
"""

from __future__ import annotations

from typing import Any

from keras import ops

from gradhealth.core.clipping import DEFAULT_AGC_CLIP_FACTOR, DEFAULT_AGC_EPS

__all__ = ["ops_adaptive_clip", "ops_clip_by_global_norm", "ops_clip_by_norm",
           "ops_clip_by_value", "ops_global_norm", "ops_norm", "ops_percentile",
           "ops_unitwise_norm"]

_TINY = 1e-30
"""float32 division guard for an all-zero unit's norm: any positive value keeps a zero gradient
zero; 1e-30 is above float32's smallest normal (1.2e-38) so the division is exact."""


def ops_norm(g: Any, axis: Any = None, keepdims: bool = False) -> Any:
    """L2 norm with max-abs scaling in float32, on the device: ``m * sqrt(sum((g / m) ** 2))``.

    Args:
        g: A tensor.
        axis: Axes to reduce (None: all).
        keepdims: Keep reduced axes as size 1.

    Returns:
        The norm; NaN/inf when ``g`` holds NaN/inf.
    """
    g = ops.cast(g, "float32")
    m = ops.max(ops.abs(g), axis=axis, keepdims=True)
    safe = ops.where(m > 0, m, ops.ones_like(m))
    n = m * ops.sqrt(ops.sum(ops.square(g / safe), axis=axis, keepdims=True))
    if keepdims:
        return n
    return ops.reshape(n, ()) if axis is None else ops.squeeze(n, axis=axis)


def ops_global_norm(grads: list[Any]) -> Any:
    """Norm of all (non-None) gradients together, combined from per-tensor scaled norms."""
    norms = ops.stack([ops_norm(g) for g in grads if g is not None])
    return ops_norm(norms)


def ops_clip_by_value(grads: list[Any], clip_value: float) -> list[Any]:
    """Device version of :func:`gradhealth.core.clipping.clip_by_value` (``None`` entries pass through)."""
    return [None if g is None else ops.clip(g, -clip_value, clip_value) for g in grads]


def _scale(g: Any, factor: Any) -> Any:
    return ops.cast(ops.cast(g, "float32") * factor, g.dtype)


def ops_clip_by_norm(grads: list[Any], max_norm: float) -> list[Any]:
    """Device version of :func:`gradhealth.core.clipping.clip_by_norm`: each tensor's norm capped at ``max_norm``."""
    out = []
    for g in grads:
        if g is None:
            out.append(None)
            continue
        n = ops_norm(g)
        factor = ops.where(ops.logical_and(ops.isfinite(n), n > max_norm),
                           max_norm / ops.maximum(n, _TINY), 1.0)
        out.append(_scale(g, factor))
    return out


def ops_clip_by_global_norm(grads: list[Any], max_norm: Any) -> tuple[list[Any], Any]:
    """Device version of :func:`gradhealth.core.clipping.clip_by_global_norm`: returns ``(clipped, pre-clip norm)``."""
    n = ops_global_norm(grads)
    factor = ops.where(ops.logical_and(ops.isfinite(n), n > max_norm),
                       max_norm / ops.maximum(n, _TINY), 1.0)
    return [None if g is None else _scale(g, factor) for g in grads], n


def ops_unitwise_norm(x: Any) -> Any:
    """Device version of :func:`unitwise_norm` (norm over all axes but the last)."""
    x = ops.cast(x, "float32")
    if len(x.shape) <= 1:
        return ops.abs(x)
    return ops_norm(x, axis=tuple(range(len(x.shape) - 1)), keepdims=True)


def ops_adaptive_clip(grads: list[Any], params: list[Any],
                      clip_factor: float = DEFAULT_AGC_CLIP_FACTOR,
                      eps: float = DEFAULT_AGC_EPS) -> list[Any]:
    """Device version of :func:`adaptive_clip` (AGC, Brock et al. 2021)."""
    out = []
    for g, p in zip(grads, params, strict=True):
        if g is None:
            out.append(None)
            continue
        max_norm = clip_factor * ops.maximum(ops_unitwise_norm(p), eps)
        g_norm = ops_unitwise_norm(g)
        factor = ops.where(g_norm > max_norm, max_norm / ops.maximum(g_norm, _TINY), 1.0)
        out.append(_scale(g, factor))
    return out


def ops_percentile(values: Any, count: Any, q: float) -> Any:
    """``np.percentile(values[:count], q)`` (linear interpolation) for a padded 1-D tensor."""
    size = values.shape[0]
    idx = ops.arange(size)
    padded = ops.where(idx < count, values, float("inf"))
    sorted_values = ops.sort(padded)
    pos = (q / 100.0) * ops.cast(ops.maximum(count - 1, 0), "float32")
    lo = ops.cast(ops.floor(pos), "int32")
    hi = ops.minimum(lo + 1, ops.maximum(ops.cast(count, "int32") - 1, 0))
    frac = pos - ops.cast(lo, "float32")
    v_lo = ops.take(sorted_values, lo)
    v_hi = ops.take(sorted_values, hi)
    return v_lo + frac * (v_hi - v_lo)

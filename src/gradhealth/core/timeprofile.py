"""The gradient through time: a profile of ``||dL/dx_t||`` per timestep and its decay rate.

In a recurrent network the gradient that reaches timestep ``t`` from a loss read at the last
step is a product of ``T - 1 - t`` recurrent Jacobians, so it changes geometrically with the
distance in time (Bengio, Simard & Frasconi 1994; Pascanu, Mikolov & Bengio 2013, sec. 2). The
per-step factor is estimated by a least-squares fit of ``log10 ||dL/dx_t||`` against ``t``: a
fit over every step, not the ratio of two endpoints, so one noisy timestep does not decide it.

Plain NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["decay_per_step", "memory_horizon", "time_profile"]


def decay_per_step(norms: Sequence[float]) -> float:
    """The factor by which the gradient changes per step back in time (``< 1``: it decays).

    Args:
        norms: ``||dL/dx_t||`` for ``t = 0 .. T-1`` (the loss reads the last step).

    Returns:
        ``10 ** (-slope)`` of the least-squares line through ``(t, log10 norm_t)`` over the
        positive finite entries; NaN with fewer than two of them.

    Example:
        >>> round(decay_per_step([0.5 ** (9 - t) for t in range(10)]), 6)
        0.5
    """
    p = np.asarray(norms, dtype=np.float64)
    t = np.arange(p.size, dtype=np.float64)
    ok = np.isfinite(p) & (p > 0)
    if ok.sum() < 2:
        return float("nan")
    slope = np.polyfit(t[ok], np.log10(p[ok]), 1)[0]
    return float(10.0 ** (-slope))


def memory_horizon(decay: float, ratio: float) -> float:
    """Steps back in time after which the gradient has shrunk by ``ratio`` (inf if it does not).

    Args:
        decay: The per-step factor (:func:`decay_per_step`).
        ratio: The shrink factor that counts as lost (e.g. ``Thresholds.vanishing_ratio``).

    Returns:
        ``log(ratio) / log(decay)`` for ``0 < decay < 1``, else ``inf``.
    """
    if not (math.isfinite(decay) and 0 < decay < 1):
        return math.inf
    return math.log(ratio) / math.log(decay)


def time_profile(norms: Sequence[float], reverse: bool = False) -> dict[str, Any]:
    """Summarize a per-timestep gradient profile.

    Args:
        norms: ``||dL/dx_t||`` per timestep, in input order.
        reverse: The layer reads the sequence backwards (``go_backwards``): the profile is
            flipped so that the last entry is the step nearest the loss.

    Returns:
        ``{"profile", "length", "first_to_max", "first_to_last", "decay_per_step"}``, where
        ``first`` is the step farthest from the loss.
    """
    p = [float(v) for v in norms]
    if reverse:
        p = p[::-1]
    arr = np.asarray(p, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    top = float(finite.max()) if finite.size else float("nan")
    first, last = (float(arr[0]), float(arr[-1])) if arr.size else (float("nan"),) * 2
    return {
        "profile": p,
        "length": len(p),
        "first_to_max": first / top if top > 0 else float("nan"),
        "first_to_last": first / last if last > 0 else float("nan"),
        "decay_per_step": decay_per_step(p),
    }

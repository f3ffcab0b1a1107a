"""Per-variable gradient statistics reduced on the device with ``keras.ops``.

The device counterpart of :func:`gradhealth.core.stats.tensor_stats`, used inside the compiled
train step by :class:`gradhealth.optim.MonitoringOptimizer` and by the checkup
(:func:`device_stats`).

**One pass when the values allow it** (:func:`direct_stats`, nearly every step): with every
entry finite and the largest magnitude ``m`` in ``[sqrt(n) 2^-53, 2^40]``, float32 sums of
squares neither overflow nor lose more than 1e-6 to underflow, so every statistic comes from
one pass over the raw gradient (and one over the weight). Only the statistics asked for are
computed (:data:`CORE_STATS` by default in the monitor).

**Two passes otherwise** (NaN/inf entries, gradients of 1e-20 or 1e20), chosen on the device:

1. :func:`grad_scan` -- the **scale pass**: per variable the largest finite magnitude ``m``,
   the non-finite count, the zero count and the dead-unit fraction. ``m`` must be known before
   squaring: a 1e-20 gradient squares to 1e-40, below float32's smallest normal.
2. :func:`scaled_sums` -- the **sums pass**: with ``s = g / m`` (every ``|s| <= 1``, so nothing
   overflows and nothing that matters underflows) the sums of ``s^2``, ``|s|`` and of the
   shifted deviations for the variance; the weights get their own scale-then-sum pair.

:func:`combine_stats` turns the two passes' ``(n_variables, ...)`` results into
:data:`DEVICE_STATS`; :func:`finite_guard` is the check the non-finite guard runs on steps that
log nothing. On JAX the functions run inside ``jit`` (XLA fuses each pass); TensorFlow and
torch get their own kernels from :mod:`gradhealth.adapters.fused`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from keras import ops

from gradhealth.core.stats import (
    CORE_STATS,
    DEVICE_STATS,
    DIRECT_MAX,
    ZERO_CHECK_BELOW,
    direct_floor,
)
from gradhealth.ops.control import cond

__all__ = ["CORE_STATS", "DEVICE_STATS", "N_SCAN", "N_SUMS", "all_finite", "combine_stats",
           "device_stats", "direct_stats", "direct_stats_grouped", "finite_guard",
           "grad_histograms", "grad_scan", "resolve_stats", "scaled_sums", "variable_sizes"]

_NONFINITE = DEVICE_STATS.index("nonfinite_count")
_ALL = frozenset(DEVICE_STATS)


def resolve_stats(stats: str | Iterable[str], argument: str = "stats") -> tuple[str, ...]:
    """``"core"`` (:data:`CORE_STATS`), ``"all"`` (:data:`DEVICE_STATS`) or names from
    :data:`DEVICE_STATS`, as a tuple in :data:`DEVICE_STATS` order.

    ``grad_norm`` and ``nonfinite_count`` are always included (the explosion detectors and the
    non-finite guard need them).

    Raises:
        ValueError, TypeError: An unknown name or a value of the wrong type.
    """
    if isinstance(stats, str):
        if stats in ("core", "all"):
            chosen = set(CORE_STATS if stats == "core" else DEVICE_STATS)
        elif stats in DEVICE_STATS:
            chosen = {stats}
        else:
            raise ValueError(f"Argument `{argument}` must be 'core', 'all' or names from "
                             f"{DEVICE_STATS}. Received: {argument}={stats!r}")
    else:
        try:
            names = list(stats)
        except TypeError:
            raise TypeError(f"Argument `{argument}` must be 'core', 'all' or an iterable of "
                            f"statistic names. Received: {argument}={stats!r} (of type "
                            f"{type(stats).__name__})") from None
        unknown = [n for n in names if n not in DEVICE_STATS]
        if unknown:
            raise ValueError(f"Argument `{argument}` holds unknown statistics {unknown}; "
                             f"choose from {DEVICE_STATS}. Received: {argument}={stats!r}")
        chosen = set(names)
    chosen.update(("grad_norm", "nonfinite_count"))
    return tuple(n for n in DEVICE_STATS if n in chosen)

N_SCAN = 4
"""Columns of :func:`grad_scan`: ``[m, nonfinite_count, zero_count, dead_unit_fraction]``."""

N_SUMS = 5
"""Columns of :func:`scaled_sums`: ``[sum s^2, sum |s|, var(s), m_w, sum s_w^2]``."""


def _groups(tensors: list[Any]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by shape, groups in order of first appearance.

    The passes run once per group on the stacked ``(k, ...)`` tensor instead of once per
    variable: a 50-layer MLP has 102 variables but 4 shapes, so the compiled step holds ~25x
    fewer operations. Tracing and optimizing the per-variable graph took 15-20 s on TensorFlow
    (the first checkup and the first monitored steps); the grouped one takes about a second.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(int(d) for d in t.shape), []).append(i)
    return list(groups.values())


def _stack(tensors: list[Any], idx: list[int]) -> Any:
    """``tensors[idx]`` (all of one shape) as one float32 tensor of shape ``(k, size)``.

    One stack and one reshape: a reshape per tensor (with its shape constant) then a
    concatenation were 236 of the 1134 operations of TensorFlow's checkup graph for a 30-layer
    MLP, and a graph executor on a CPU pays per operation."""
    parts = [ops.cast(tensors[i], "float32") for i in idx]
    return ops.reshape(parts[0] if len(parts) == 1 else ops.stack(parts), (len(parts), -1))


def _in_order(blocks: list[Any], groups: list[list[int]]) -> Any:
    """Rows of the per-group results put back in the order of the variables."""
    order = [i for idx in groups for i in idx]
    rows = blocks[0] if len(blocks) == 1 else ops.concatenate(blocks, axis=0)
    if order == sorted(order):
        return rows
    inverse = np.argsort(np.asarray(order, dtype=np.int64)).astype("int32")
    return ops.take(rows, ops.convert_to_tensor(inverse), axis=0)


def _scan_group(g: Any, shape: tuple[int, ...], want: frozenset[str] = _ALL) -> Any:
    """``(k, N_SCAN)`` for ``k`` stacked gradients of one shape (``g`` is ``(k, size)``).

    Columns whose statistic is not in ``want`` are 0 (not computed): ``m`` and the non-finite
    count are always needed (the scale, and the count of entries the means divide by).
    """
    k = g.shape[0]
    finite = ops.isfinite(g)
    bad = ops.sum(ops.cast(ops.logical_not(finite), "float32"), axis=1)
    a = ops.where(finite, ops.abs(g), 0.0)
    zeros = (ops.sum(ops.cast(ops.equal(g, 0.0), "float32"), axis=1)
             if "zero_fraction" in want else ops.zeros((k,), "float32"))
    if "dead_unit_fraction" not in want or len(shape) == 0:  # a scalar has no units
        return ops.stack([ops.max(a, axis=1), bad, zeros, ops.zeros((k,), "float32")], axis=1)
    # Per unit: the largest finite magnitude and the non-finite count (one loop over g); a unit
    # is dead when every entry is exactly 0 (a NaN/inf entry counts as alive).
    units = shape[-1]
    unit_max = ops.max(ops.reshape(a, (k, -1, units)), axis=1)
    unit_bad = ops.sum(ops.reshape(ops.cast(ops.logical_not(finite), "float32"),
                                   (k, -1, units)), axis=1)
    dead_units = ops.logical_and(ops.equal(unit_max, 0.0), ops.equal(unit_bad, 0.0))
    dead = ops.mean(ops.cast(dead_units, "float32"), axis=1)
    return ops.stack([ops.max(unit_max, axis=1), bad, zeros, dead], axis=1)


def grad_scan(grads: list[Any], stats: Iterable[str] = DEVICE_STATS) -> Any:
    """The scale pass: ``(n_variables, N_SCAN)`` = ``[m, nonfinite, zeros, dead_fraction]``.

    ``m`` is the largest finite ``|g|`` of each variable; a scalar variable has no units (its
    dead fraction is 0, as in :func:`gradhealth.core.stats.dead_unit_fraction`). Variables of
    the same shape are reduced together (one stacked tensor per shape).

    Args:
        grads: Dense gradient tensors (no ``None``).
        stats: The :data:`DEVICE_STATS` wanted (default all): the zero count and the dead
            fraction are computed only for ``zero_fraction`` and ``dead_unit_fraction``
            (0 otherwise), so the monitor's core statistics take one max and one count.

    Returns:
        A float32 tensor of shape ``(len(grads), N_SCAN)``.
    """
    want = frozenset(stats)
    groups = _groups(grads)
    blocks = [_scan_group(_stack(grads, idx), tuple(int(d) for d in grads[idx[0]].shape), want)
              for idx in groups]
    return _in_order(blocks, groups)


def _inverse(m: Any) -> Any:
    """A power of two near ``1 / m`` for a positive finite scale, 1 otherwise.

    Multiplying by a power of two is exact, so the scaled entries keep every bit: dividing by
    ``m`` itself would round each entry by 6e-8 of its size, which for entries far from zero
    (mean >> std) becomes a 1e-4 error in the standard deviation. The exponent is clipped to
    [-126, 126] so the factor stays a normal float32.
    """
    ok = ops.logical_and(ops.isfinite(m), m > 0)
    e = ops.clip(ops.floor(ops.log2(ops.where(ok, m, 1.0))), -126.0, 126.0)
    return ops.where(ok, ops.power(2.0, -e), 1.0)


def _ratio(m: Any, inv: Any) -> Any:
    """``m * inv`` (in [1, 2) for a positive finite ``m``; 1 otherwise)."""
    return ops.where(ops.logical_and(ops.isfinite(m), m > 0), m * inv, 1.0)


def _shift(s: Any, finite: Any) -> Any:
    """The shift of the one-pass variance, ``(k, 1)``: an entry of each row inside its data.

    The first of the first, middle and last entries that is finite (a non-finite entry was
    zeroed, and 0 is far from entries that sit far from zero); 0 when none of the three is.
    """
    size = s.shape[1]
    c = ops.zeros_like(s[:, :1])
    for j in sorted({size - 1, size // 2, 0}, reverse=True):
        c = ops.where(finite[:, j:j + 1], s[:, j:j + 1], c)
    return c


def _sums_group(g: Any, w: Any, scan: Any, want: frozenset[str] = _ALL) -> Any:
    """``(k, N_SUMS)`` for ``k`` stacked gradients ``g`` and weights ``w`` (both ``(k, size)``).

    Only the sums that a statistic in ``want`` needs are computed; the others are 0.
    """
    k = g.shape[0]
    size = float(max(g.shape[1], 1))
    skip = ops.zeros((k,), "float32")
    finite = ops.isfinite(g)
    m = scan[:, 0]
    inv = _inverse(m)
    q = _ratio(m, inv)  # s / q = g / m exactly as far as the sums go
    s = ops.where(finite, g, 0.0) * inv[:, None]
    sumabs = ops.sum(ops.abs(s), axis=1) / q if "grad_mean_abs" in want else skip
    var = skip
    if "grad_std" in want:
        n = ops.maximum(size - scan[:, 1], 1.0)
        c = _shift(s, finite)
        d = ops.where(finite, s - c, 0.0)
        mean_d = ops.sum(d, axis=1) / n
        var = ops.maximum(ops.sum(d * d, axis=1) / n - mean_d * mean_d, 0.0) / (q * q)
    mw = sumsq_w = skip
    if "weight_norm" in want:
        wf = ops.where(ops.isfinite(w), w, 0.0)
        mw = ops.max(ops.abs(wf), axis=1)
        inv_w = _inverse(mw)
        qw = _ratio(mw, inv_w)
        sw = wf * inv_w[:, None]
        sumsq_w = ops.sum(sw * sw, axis=1) / (qw * qw)
    return ops.stack([ops.sum(s * s, axis=1) / (q * q), sumabs, var, mw, sumsq_w], axis=1)


def scaled_sums(grads: list[Any], weights: list[Any], scan: Any,
                stats: Iterable[str] = DEVICE_STATS) -> Any:
    """The sums pass: ``(n_variables, N_SUMS)`` given the scales from :func:`grad_scan`.

    With ``s = g / m`` over the finite entries, each row holds ``[sum s^2, sum |s|, var(s), m_w,
    sum (w/m_w)^2]``; the weight norm is scaled the same way. The population variance comes from
    the same pass as the sums: shifted by ``c``, the first entry of ``s``, the one-pass formula
    ``E[(s-c)^2] - E[s-c]^2`` stays free of cancellation when the entries sit far from zero
    (Chan, Golub & LeVeque 1983). Variables of the same shape are reduced together.

    Args:
        grads: Dense gradient tensors, in the order of ``scan``'s rows.
        weights: The variables' values.
        scan: The output of :func:`grad_scan` for ``grads``.
        stats: The :data:`DEVICE_STATS` wanted (default all): ``sum |s|``, the variance and
            the weight sums are computed only for ``grad_mean_abs``, ``grad_std`` and
            ``weight_norm`` (0 otherwise).

    Returns:
        A float32 tensor of shape ``(len(grads), N_SUMS)``.

    References:
        Chan, Golub & LeVeque (1983). Algorithms for computing the sample variance: analysis
        and recommendations. The American Statistician 37(3).
    """
    if len(grads) != len(weights):
        raise ValueError(f"Arguments `grads` and `weights` must have the same length. "
                         f"Received: {len(grads)} and {len(weights)}")
    want = frozenset(stats)
    groups = _groups(grads)
    blocks = []
    for idx in groups:
        rows = scan[idx[0]:idx[0] + 1] if len(idx) == 1 else ops.take(
            scan, ops.convert_to_tensor(np.asarray(idx, dtype="int32")), axis=0)
        blocks.append(_sums_group(_stack(grads, idx), _stack(weights, idx), rows, want))
    return _in_order(blocks, groups)


def grad_histograms(grads: list[Any], scan: Any, buckets: int) -> Any:
    """Per variable, counts of the finite gradient entries in ``buckets`` equal bins over
    ``[-m, m]`` (``m`` from :func:`grad_scan`), shape ``(n_variables, buckets)``.

    What TensorBoard's histogram needs, reduced on the device (only the counts reach the host).
    Bucket ``j`` spans ``[-m + 2mj/buckets, -m + 2m(j+1)/buckets)``, the last one closed.
    """
    groups = _groups(grads)
    blocks = []
    for idx in groups:
        g = _stack(grads, idx)
        m = ops.take(scan[:, 0], ops.convert_to_tensor(np.asarray(idx, dtype="int32")), axis=0)
        finite = ops.isfinite(g)
        inv = _inverse(m)
        s = ops.where(finite, g, 0.0) * (inv / _ratio(m, inv))[:, None]  # g / m
        bins = ops.cast(ops.clip(ops.floor((s + 1.0) * (buckets / 2.0)), 0, buckets - 1), "int32")
        onehot = ops.one_hot(bins, buckets) * ops.cast(finite, "float32")[:, :, None]
        blocks.append(ops.sum(onehot, axis=1))
    return _in_order(blocks, groups)


def variable_sizes(weights: list[Any]) -> np.ndarray:
    """Number of entries of each variable (at least 1), float32, for :func:`combine_stats`."""
    return np.array([max(int(np.prod(w.shape)), 1) for w in weights], dtype="float32")


def combine_stats(scan: Any, sums: Any, sizes: Any, grad_scale: Any = None) -> Any:
    """:data:`DEVICE_STATS` from the two passes, shape ``(n_variables, 8)``.

    Args:
        scan: :func:`grad_scan` output.
        sums: :func:`scaled_sums` output.
        sizes: :func:`variable_sizes` of the variables.
        grad_scale: Optional factor the gradients are multiplied by before reporting (the
            inverse loss scale under mixed precision, a power of two, so exact); only the
            magnitudes ``m`` change, the scaled sums do not.

    Returns:
        A float32 tensor; a variable with no finite entry gets NaN for the magnitude
        statistics, as :func:`gradhealth.core.stats.tensor_stats` does.
    """
    sizes = ops.convert_to_tensor(sizes, dtype="float32")
    m, bad, zeros, dead = (scan[:, i] for i in range(N_SCAN))
    if grad_scale is not None:
        m = m * ops.cast(grad_scale, "float32")
    sumsq, sumabs, var, mw, sumsq_w = (sums[:, i] for i in range(N_SUMS))
    n = sizes - bad
    none_finite = n < 0.5
    denom = ops.maximum(n, 1.0)
    nan = float("nan")
    return ops.stack([
        ops.where(none_finite, nan, m * ops.sqrt(sumsq)),
        ops.where(none_finite, nan, m * sumabs / denom),
        ops.where(none_finite, nan, m),
        ops.where(none_finite, nan, m * ops.sqrt(var)),
        zeros / sizes,
        bad,
        mw * ops.sqrt(sumsq_w),
        dead,
    ], axis=1)


def _sum_squares(x: Any) -> Any:
    """``sum(x * x)`` of a flat float32 tensor: a dot product (one fused loop under XLA)."""
    return ops.vdot(x, x)


def direct_stats(grads: list[Any], weights: list[Any],
                 stats: tuple[str, ...] = DEVICE_STATS,
                 sum_squares: Any = None) -> tuple[Any, Any]:
    """One unscaled pass per gradient and per weight: ``(table, ok)``.

    Most gradients need no scaling: when every entry is finite and the largest magnitude ``m``
    lies in ``[sqrt(n) 2^-53, 2^40]`` (or is 0), float32 sums of squares neither overflow nor
    lose more than 1e-6 of their value to underflow, so the statistics come from one pass over
    the raw values -- the sums of :func:`scaled_sums` without the scale pass before them, and
    the same numbers up to rounding (scaling by a power of two is exact). ``ok`` says, per
    variable, whether that holds; :func:`device_stats` falls back to the two exact passes for a
    step where it does not (NaN/inf, or gradients beyond the range).

    Args:
        grads: Dense gradient tensors (zeros for an unconnected variable).
        weights: The variables' values, same order.
        stats: Which of :data:`DEVICE_STATS` to compute (:func:`resolve_stats`); the others
            are NaN.
        sum_squares: The backend's fastest ``sum(x * x)`` of a flat tensor (TensorFlow:
            ``2 * tf.nn.l2_loss``, one kernel); default a ``keras.ops`` dot product.

    Returns:
        ``table``: float32 ``(len(grads), len(DEVICE_STATS))``, valid where ``ok``; ``ok``:
        boolean ``(len(grads),)``.
    """
    return _direct_in_groups(grads, weights, stats, sum_squares,
                             [[i] for i in range(len(grads))])


def _direct_sums(g: Any, w: Any, shape: tuple[int, ...], want: set[str],
                 sumsq: Any) -> dict[str, Any]:
    """The reductions of :func:`direct_stats` for ``k`` stacked variables of one shape
    (``g``, ``w``: ``(k, n)``), each of shape ``(k,)``; :func:`_direct_table` turns the
    reductions of every group into the table in one set of operations."""
    k, size = int(g.shape[0]), _size(shape)

    def rows_sumsq(t: Any) -> Any:
        return ops.reshape(sumsq(ops.reshape(t, (-1,))), (1,)) if k == 1 else ops.sum(
            t * t, axis=1)

    a = ops.abs(g)
    out = {"q": rows_sumsq(g)}
    if "dead_unit_fraction" in want and len(shape) >= 1:
        unit_max = ops.max(ops.reshape(a, (k, -1, shape[-1])), axis=1)
        out["m"] = ops.max(unit_max, axis=1)
        out["dead"] = ops.mean(ops.cast(ops.equal(unit_max, 0.0), "float32"), axis=1)
    else:
        out["m"] = ops.max(a, axis=1)
    if "weight_norm" in want:
        out["qw"] = rows_sumsq(w)
        if size < ZERO_CHECK_BELOW:
            # A zero sum of squares is exact when every entry is 0: the zero-initialized biases
            # and normalization offsets of every fresh model. Without this, each checkup of an
            # untrained model took the two exact passes (a 50-block residual MLP's eager
            # checkup on TensorFlow: 1.5 s, 0.84 s with it).
            out["w_zero"] = ops.all(ops.equal(w, 0.0), axis=1)
    if "grad_std" in want and size > 1:
        d = g - g[:, :1]
        out["d1"], out["d2"] = ops.sum(d, axis=1) / size, ops.sum(d * d, axis=1) / size
    if "grad_mean_abs" in want:
        out["mean_abs"] = ops.sum(a, axis=1) / size
    if "zero_fraction" in want:
        out["zero"] = ops.sum(ops.cast(ops.equal(g, 0.0), "float32"), axis=1) / size
    return out


def _size(shape: tuple[int, ...]) -> int:
    """Entries of a variable of ``shape``, at least 1 (a scalar's, and the divisor of means)."""
    return max(int(np.prod(shape)) if shape else 1, 1)


def _direct_table(sums: list[dict[str, Any]], shapes: list[tuple[int, ...]],
                  counts: list[int], want: set[str]) -> tuple[Any, Any]:
    """``(table, ok)`` of :func:`direct_stats` from :func:`_direct_sums` of each group
    (``counts[i]`` variables of shape ``shapes[i]``), rows in the groups' order.

    The checks and the columns run once over every variable's numbers: per group they were
    about 20 operations, which a graph executor on a CPU pays for each variable of a model
    whose shapes all differ (TensorFlow, the monitor's 20 x 256 MLP: 20 kernels of 256 x 256
    are reduced one by one)."""
    n = sum(counts)
    sizes = np.repeat([_size(shape) for shape in shapes], counts)
    floor = ops.convert_to_tensor(np.array([direct_floor(int(size)) for size in sizes],
                                           "float32"))

    def joined(key: str, default: Any) -> Any:
        parts = [part[key] if key in part else ops.full((k,), default, _dtype(default))
                 for part, k in zip(sums, counts, strict=True)]
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0)

    q, m = joined("q", 0.0), joined("m", 0.0)
    nan = ops.full((n,), float("nan"), "float32")
    ok = ops.logical_and(ops.isfinite(q), m <= DIRECT_MAX)
    ok = ops.logical_and(ok, ops.logical_or(ops.equal(m, 0.0), m >= floor))
    qw = ops.zeros((n,), "float32")
    if "weight_norm" in want:
        qw = joined("qw", 0.0)
        w_ok = qw >= ops.convert_to_tensor(
            np.array([direct_floor(int(size)) ** 2 for size in sizes], "float32"))
        if any("w_zero" in part for part in sums):
            w_ok = ops.logical_or(w_ok, joined("w_zero", False))
        ok = ops.logical_and(ok, ops.logical_and(ops.isfinite(qw), w_ok))
    std = nan
    if "grad_std" in want:
        if any("d1" in part for part in sums):
            d1, d2 = joined("d1", 0.0), joined("d2", 0.0)  # a single entry: std 0, exact
            std = ops.sqrt(ops.maximum(d2 - d1 * d1, 0.0))
            ok = ops.logical_and(ok, ops.logical_or(
                ops.logical_or(ops.equal(m, 0.0), d2 >= 2.0 ** -106),
                ops.convert_to_tensor(sizes <= 1)))
        else:
            std = ops.zeros((n,), "float32")
    col = {"grad_norm": ops.sqrt(q), "grad_max_abs": m, "grad_std": std,
           "grad_mean_abs": joined("mean_abs", 0.0) if "grad_mean_abs" in want else nan,
           "zero_fraction": joined("zero", 0.0) if "zero_fraction" in want else nan,
           "nonfinite_count": ops.zeros((n,), "float32"), "weight_norm": ops.sqrt(qw),
           "dead_unit_fraction": joined("dead", 0.0) if "dead_unit_fraction" in want else nan}
    return ops.stack([col[c] if c in want else nan for c in DEVICE_STATS], axis=1), ok


def _dtype(value: Any) -> str:
    return "bool" if isinstance(value, bool) else "float32"


GROUP_BELOW = 16384
"""Variables with fewer entries than this are stacked with the others of their shape by
:func:`direct_stats_grouped`; larger ones are reduced one by one (their copy would cost more
than the operations it saves: on a 2-core CPU, TensorFlow, 62 variables of 64x64 took 1.5 ms
stacked against 3.3 ms one by one, 42 of 256x256 4.2 ms stacked against 2.1 ms)."""


def direct_stats_grouped(grads: list[Any], weights: list[Any],
                         stats: tuple[str, ...] = DEVICE_STATS,
                         sum_squares: Any = None) -> tuple[Any, Any]:
    """:func:`direct_stats` with the small variables of one shape reduced together.

    Fewer, larger operations: what a graph executor that pays per operation wants (TensorFlow
    on a CPU, where each of the ~25 operations per variable costs microseconds), at the price
    of one copy of those gradients into a stacked tensor (:data:`GROUP_BELOW`).
    """
    groups = []
    for idx in _groups(grads):
        small = max(int(np.prod(grads[idx[0]].shape)), 1) < GROUP_BELOW
        groups.extend([idx] if small else [[i] for i in idx])
    return _direct_in_groups(grads, weights, stats, sum_squares, groups)


def _direct_in_groups(grads: list[Any], weights: list[Any], stats: tuple[str, ...],
                      sum_squares: Any, groups: list[list[int]]) -> tuple[Any, Any]:
    """:func:`_direct_sums` over ``groups`` of variable indices, then :func:`_direct_table`
    over them all, rows in variable order."""
    want = set(stats)
    sumsq = sum_squares or _sum_squares
    shapes = [tuple(int(d) for d in grads[idx[0]].shape) for idx in groups]
    sums = [_direct_sums(_stack(grads, idx), _stack(weights, idx), shape, want, sumsq)
            for idx, shape in zip(groups, shapes, strict=True)]
    table, ok = _direct_table(sums, shapes, [len(idx) for idx in groups], want)
    return _in_order([table], groups), _in_order([ok], groups)


def finite_guard(grads: list[Any], cond: Any = cond) -> Any:
    """A boolean scalar: every entry of every gradient is finite.

    One sum per gradient: a NaN/inf entry makes its sum non-finite. A finite sum can still
    overflow (entries near 1e38), so a non-finite total is confirmed entry by entry before the
    step is called non-finite; the check costs one reduction on every other step. ``cond`` is
    the backend's conditional (:func:`gradhealth.ops.control.cond` by default).
    """
    if not grads:
        return ops.convert_to_tensor(True)
    total = ops.sum(ops.stack([ops.sum(ops.cast(g, "float32")) for g in grads]))
    return cond(ops.isfinite(total), lambda: ops.convert_to_tensor(True),
                lambda: all_finite(grads))


def all_finite(grads: list[Any]) -> Any:
    """A boolean scalar: every entry of every gradient is finite, with no conditional.

    One ``isfinite``-and-``all`` per gradient: under XLA each is one fused reduction, the same
    pass as :func:`finite_guard`'s sum, with nothing to confirm afterwards. On an accelerator
    that matters: a conditional there reads its predicate on the host, so the device waits for
    the host in the middle of every step.
    """
    if not grads:
        return ops.convert_to_tensor(True)
    return ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in grads]))


def _mask(table: Any, stats: tuple[str, ...]) -> Any:
    """``table`` with the columns not in ``stats`` set to NaN."""
    if len(stats) == len(DEVICE_STATS):
        return table
    keep = np.array([c in stats for c in DEVICE_STATS])
    return ops.where(ops.convert_to_tensor(keep)[None, :], table, float("nan"))


def device_stats(grads: list[Any], weights: list[Any], kernels: Any = None,
                 stats: tuple[str, ...] = DEVICE_STATS) -> Any:
    """The :data:`DEVICE_STATS` of every (gradient, weight) pair, shape ``(n_variables, 8)``.

    Computed on the device with ``keras.ops`` to match
    :func:`gradhealth.core.stats.tensor_stats`: non-finite entries are counted and left out of
    every other statistic, and norms are scaled so float32 never underflows. One pass over each
    gradient and each weight when the values allow it (:func:`direct_stats`, nearly always),
    else the two exact passes (:func:`grad_scan`, :func:`scaled_sums`), chosen on the device
    (:func:`gradhealth.ops.control.cond`). Kernels marked ``branch_free`` (JAX on a GPU or
    TPU, :func:`gradhealth.adapters.fused.stats_kernels`) always run the two exact passes: there
    a conditional reads its predicate on the host, a stall in the middle of the step that costs
    more than the extra pass. (A single concatenated vector with segment reductions was
    measured too: fewer operations, but 4x (TensorFlow) to 10x (torch) slower per step on CPU,
    where segment reductions are scatters.)

    Args:
        grads: Dense gradient tensors (no ``None``; pass zeros for an unconnected variable).
        weights: The variables' values, same order.
        kernels: Where the passes come from: a backend's fused kernels
            (:func:`gradhealth.adapters.fused.stats_kernels`), or None for this module's.
        stats: The statistics to compute (:func:`resolve_stats`); the other columns are NaN.

    Returns:
        A float32 tensor of shape ``(len(grads), len(DEVICE_STATS))``.

    Example:
        >>> device_stats([ops.ones((2, 3))], [ops.ones((2, 3))])[0, 0]  # sqrt(6)
    """
    k = kernels if kernels is not None else _GENERIC
    if not grads:
        return ops.zeros((0, len(DEVICE_STATS)), "float32")
    empty = _empty_positions(weights)
    if empty:
        return _with_empty_rows(grads, weights, k, stats, empty)

    def exact() -> Any:
        # Only the sums ``stats`` needs (the core statistics: a max and a count, then one sum
        # per gradient and the weight's pair). Branch-free kernels run this every step; on the
        # other path it is the rare fallback, but a graph traces (and XLA compiles) it with
        # every step: on TensorFlow the fallback of all eight statistics was 0.6 s of the
        # 1.2 s first step of a monitored 6-layer MLP.
        scan = k.grad_scan(grads, stats)
        return _mask(combine_stats(scan, k.scaled_sums(grads, weights, scan, stats),
                                   variable_sizes(weights)), stats)

    if getattr(k, "branch_free", False):
        return exact()
    table, ok = k.direct_stats(grads, weights, stats)
    return k.cond(ops.all(ok), lambda: table, exact)


def _empty_positions(weights: list[Any]) -> list[int]:
    """Positions of the variables with no entries (a static shape with a 0)."""
    return [i for i, w in enumerate(weights) if 0 in tuple(w.shape)]


def _with_empty_rows(grads: list[Any], weights: list[Any], kernels: Any,
                     stats: tuple[str, ...], empty: list[int]) -> Any:
    """:func:`device_stats` where some variables have no entries: their rows are zeros, as
    :func:`gradhealth.core.stats.tensor_stats` defines them (every reduction over nothing is
    0); the others are reduced as usual. A max over an empty tensor has no value, so every
    backend's kernels raise on one."""
    skipped = set(empty)
    keep = [i for i in range(len(weights)) if i not in skipped]
    zeros = _mask(ops.zeros((len(empty), len(DEVICE_STATS)), "float32"), stats)
    if not keep:
        return zeros
    table = ops.cast(device_stats([grads[i] for i in keep], [weights[i] for i in keep],
                                  kernels=kernels, stats=stats), "float32")
    order = np.argsort(np.asarray(keep + empty), kind="stable").astype("int32")
    return ops.take(ops.concatenate([table, zeros], axis=0), ops.convert_to_tensor(order),
                    axis=0)


class _Generic:
    """This module's passes, in the shape of :class:`gradhealth.adapters.fused.StatsKernels`."""

    grad_scan = staticmethod(grad_scan)
    scaled_sums = staticmethod(scaled_sums)
    direct_stats = staticmethod(direct_stats)
    finite_guard = staticmethod(finite_guard)
    cond = staticmethod(cond)
    grad_histograms = staticmethod(grad_histograms)
    branch_free = False


_GENERIC = _Generic()

"""The monitor's statistics on torch with multi-tensor kernels (``torch._foreach_*``).

Keras' torch backend runs the train step eagerly, so the ``keras.ops`` formulation of
:mod:`gradhealth.ops.stats` costs a dozen Python calls per variable. Here each pass is one
``torch._foreach_norm`` call over all variables (the fused kernel behind
``torch.nn.utils.clip_grad_norm_``; tensors over :data:`ONE_CALL_MAX` entries are reduced in
rows, see :func:`norms`), plus one call per matrix for the per-unit maxima. The results match
:mod:`gradhealth.ops.stats` column for column.

Scaling: a norm computed directly in float32 is exact when the largest magnitude ``m`` lies
within :data:`DIRECT_RANGE` (nothing overflows, and entries whose squares underflow contribute
less than 1e-20 of the total); outside it, and for tensors holding NaN/inf, the gradients are
divided by ``m`` first, as on the other backends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from gradhealth.core.stats import DEVICE_STATS, DIRECT_MAX, ZERO_CHECK_BELOW, direct_floor

__all__ = ["DIRECT_RANGE", "ONE_CALL_MAX", "ROW", "count_step", "direct_stats", "finite_guard",
           "grad_histograms", "grad_scan", "norms", "scaled_sums", "settled", "write_row"]

DIRECT_RANGE: tuple[float, float] = (2.0 ** -20, 2.0 ** 40)
"""Largest magnitudes ``m`` for which float32 sums of squares need no scaling: ``m >= 2^-20``
puts ``m^2`` at >= 1e-12, so squares that underflow (< 1.2e-38) weigh < 1e-26 each relative to
it; ``m <= 2^40`` keeps ``n m^2 < 3.4e38`` (float32's largest) for any ``n < 2.8e14``."""

_INF = math.inf
_F32_MAX = float(torch.finfo(torch.float32).max)

ONE_CALL_MAX = 1 << 17
"""Tensors of up to this many entries have their norms taken in one multi-tensor call. torch's
CPU norm kernel adds into float32 accumulators, so its error grows with the length: measured on
normal entries, 1.7e-6 relative at 2^17 entries, 1.6e-5 at 2^20, 1.1e-4 at 2^22 and 8.7e-4 at
2^24 (and a count of nonzero entries stops at 2^24). Longer tensors are reduced in rows of
:data:`ROW` entries first, then over the rows (:func:`norms`)."""

ROW = 1 << 16
"""Entries per row of a long tensor's two-level reduction (5.6e-8 relative per row)."""


def _f32(grads: list[Any]) -> list[torch.Tensor]:
    """Float32 tensors, detached from autograd where it is on. Keras' optimizer step runs
    under ``torch.no_grad()``: there the weights (parameters) are used as they are, which saves
    three calls per weight (0.1 ms a step on a 42-variable model)."""
    grad_on = torch.is_grad_enabled()
    return [g if isinstance(g, torch.Tensor) and g.dtype == torch.float32 and not (
                grad_on and g.requires_grad)
            else torch.as_tensor(g).detach().to(torch.float32) for g in grads]


def _long_norm(t: torch.Tensor, order: float) -> torch.Tensor:
    """``vector_norm(t, order)`` of a long tensor, row by row then over the rows."""
    flat = t.reshape(-1)
    k = flat.numel() // ROW
    parts = torch.linalg.vector_norm(flat[:k * ROW].view(k, ROW), order, dim=1)
    if k * ROW < flat.numel():
        parts = torch.cat([parts, torch.linalg.vector_norm(flat[k * ROW:], order).reshape(1)])
    # Row norms combine as the norm of norms (order 1, 2, inf); counts (order 0) add up.
    return parts.sum() if order == 0 else torch.linalg.vector_norm(parts, order)


def norms(tensors: list[torch.Tensor], order: float,
          apart: frozenset[int] | None = None) -> torch.Tensor:
    """``torch.stack(torch._foreach_norm(tensors, order))``, accurate for long tensors too.

    Tensors of up to :data:`ONE_CALL_MAX` entries, and CUDA tensors, go through one
    ``_foreach_norm`` call; longer ones elsewhere are reduced in rows (:data:`ROW`), which keeps
    a norm within 1e-7 relative of float64 where the CPU kernel's float32 accumulation is off
    by 1e-4 at 4 million entries.

    Args:
        tensors: The tensors (at least one).
        order: 0 (nonzero count), 1, 2 or ``math.inf`` (exact at any length: no rows).
        apart: The positions of the tensors reduced on their own (:func:`_apart`), when the
            caller knows them already; by default they are found here.

    Returns:
        A 1-D float tensor: one norm per tensor (0 for an empty one).
    """
    if apart is None:
        apart = _apart(tensors, order)
    if not apart:
        return torch.stack(torch._foreach_norm(tensors, order))
    out: list[Any] = [None] * len(tensors)
    together = [i for i in range(len(tensors)) if i not in apart]
    if together:
        for i, n in zip(together, torch._foreach_norm([tensors[i] for i in together], order),
                        strict=True):
            out[i] = n
    for i in apart:
        t = tensors[i]
        out[i] = t.new_zeros(()) if t.numel() == 0 else _long_norm(t, order)
    return torch.stack(out)


def _apart(tensors: list[torch.Tensor], order: float) -> frozenset[int]:
    """The positions :func:`norms` reduces on their own: empty tensors (their norm is 0, and
    torch raises on one for the inf norm), and long tensors off CUDA for a finite order. CUDA's
    multi-tensor kernel reduces each tensor in blocks, then over the blocks: accurate already,
    and one launch for all (the transformer of the benchmarks has 50 long tensors)."""
    return frozenset(i for i, t in enumerate(tensors) if t.numel() == 0 or (
        t.numel() > ONE_CALL_MAX and not t.is_cuda and order != _INF))


def _units(g: torch.Tensor) -> torch.Tensor:
    return g.reshape(-1, g.shape[-1]) if g.dim() >= 2 else g.reshape(1, -1)


def _scan_exact(g: torch.Tensor) -> list[torch.Tensor]:
    """One variable's scan over its finite entries only (a tensor holding NaN/inf)."""
    if g.numel() == 0:
        z = torch.zeros((), device=g.device)
        return [z, z, z, z]
    finite = torch.isfinite(g)
    a = torch.where(finite, g.abs(), torch.zeros_like(g))
    unit_max = _units(a).amax(0)
    unit_bad = _units((~finite).to(torch.float32)).sum(0)
    dead = ((unit_max == 0) & (unit_bad == 0)).to(torch.float32).mean()
    if g.dim() == 0:
        dead = torch.zeros((), device=g.device)
    return [unit_max.max(), (~finite).sum().to(torch.float32),
            (g == 0).sum().to(torch.float32), dead]


def grad_scan(grads: list[Any], stats: Any = None) -> torch.Tensor:
    """``(n, 4)`` = ``[m, nonfinite, zeros, dead_fraction]`` (see ``ops.stats.grad_scan``).

    Every column, whatever ``stats`` asks for: torch runs eagerly, so the exact passes cost
    only on the rare step that takes them (``ops.stats.device_stats`` masks the others)."""
    gs = _f32(grads)
    # One pass per matrix: the largest |g| of each unit (column); NaN/inf propagate.
    cols = [torch.linalg.vector_norm(_units(g), ord=_INF, dim=0) if g.dim() >= 2
            else g.abs().reshape(-1) for g in gs]
    m = norms(cols, _INF)
    if not bool(torch.isfinite(m).all()):
        return torch.stack([torch.stack(_scan_exact(g)) for g in gs])
    sizes = torch.tensor([g.numel() for g in gs], dtype=torch.float32, device=m.device)
    nonzero = norms(gs, 0)
    live_units = norms(cols, 0)
    n_units = torch.tensor([c.numel() for c in cols], dtype=torch.float32, device=m.device)
    dead = torch.where(n_units > 0, 1.0 - live_units / n_units.clamp(min=1.0),
                       torch.zeros_like(m))
    scalar = torch.tensor([g.dim() == 0 for g in gs], device=m.device)
    dead = torch.where(scalar, torch.zeros_like(dead), dead)
    return torch.stack([m, torch.zeros_like(m), sizes - nonzero, dead], dim=1)


def _direct(m: torch.Tensor) -> bool:
    lo, hi = DIRECT_RANGE
    return bool(((m >= lo) & (m <= hi)).all())


def _inverse(m: torch.Tensor) -> torch.Tensor:
    """A power of two near ``1 / m`` (exact scaling; see ``ops.stats._inverse``), 1 for 0/inf."""
    ok = torch.isfinite(m) & (m > 0)
    e = torch.floor(torch.log2(torch.where(ok, m, torch.ones_like(m)))).clamp(-126.0, 126.0)
    return torch.where(ok, torch.pow(2.0, -e), torch.ones_like(m))


def _sums_exact(g: torch.Tensor, m: torch.Tensor) -> list[torch.Tensor]:
    g = g.reshape(-1)
    finite = torch.isfinite(g)
    inv = _inverse(m)
    q = torch.where(torch.isfinite(m) & (m > 0), m * inv, torch.ones_like(m))  # in [1, 2)
    s = torch.where(finite, g, torch.zeros_like(g)) * inv
    var = _shifted_var(s[finite])
    return [(s * s).sum() / (q * q), s.abs().sum() / q, var / (q * q)]


def _shifted_var(x: torch.Tensor) -> torch.Tensor:
    """Population variance of ``x`` after subtracting its first entry: entries far from zero
    (mean >> std) keep their float32 precision (Chan, Golub & LeVeque 1983)."""
    x = x.reshape(-1)
    if x.numel() <= 1:
        return x.new_zeros(())
    return (x - x[0]).var(correction=0)


def _weight_norms(ws: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    mw = norms(ws, _INF)
    if bool(torch.isfinite(mw).all()) and _direct(mw[mw > 0]):
        norm = norms(ws, 2)
        return mw, torch.where(mw > 0, (norm / torch.where(mw > 0, mw, 1.0)) ** 2, 0.0)
    out_m, out_s = [], []
    for w in ws:
        wf = torch.where(torch.isfinite(w), w, torch.zeros_like(w))
        m = wf.abs().max() if wf.numel() else torch.zeros((), device=w.device)
        s = wf / torch.where(m > 0, m, torch.ones_like(m))
        out_m.append(m)
        out_s.append((s * s).sum())
    return torch.stack(out_m), torch.stack(out_s)


def scaled_sums(grads: list[Any], weights: list[Any], scan: torch.Tensor,
                stats: Any = None) -> torch.Tensor:
    """``(n, 5)`` = ``[sum s^2, sum |s|, var(s), m_w, sum s_w^2]`` (see ``ops.stats.scaled_sums``);
    every column, as :func:`grad_scan`."""
    gs = _f32(grads)
    ws = _f32(weights)
    m = scan[:, 0]
    clean = bool((scan[:, 1] == 0).all())
    if clean and _direct(m[m > 0]):
        safe = torch.where(m > 0, m, torch.ones_like(m))
        sumsq = (norms(gs, 2) / safe) ** 2
        sumabs = norms(gs, 1) / safe
        var = torch.stack([_shifted_var(g) for g in gs]) / (safe * safe)
    else:
        rows = [_sums_exact(g, m[i]) for i, g in enumerate(gs)]
        sumsq, sumabs, var = (torch.stack([r[j] for r in rows]) for j in range(3))
    mw, sumsq_w = _weight_norms(ws)
    return torch.stack([sumsq, sumabs, var, mw, sumsq_w], dim=1).to(torch.float32)


def grad_histograms(grads: list[Any], scan: torch.Tensor, buckets: int) -> torch.Tensor:
    """``(n, buckets)`` counts over ``[-m, m]`` (see ``ops.stats.grad_histograms``)."""
    rows = []
    for i, g in enumerate(_f32(grads)):
        g = g.reshape(-1)
        finite = torch.isfinite(g)
        m = scan[i, 0]
        s = torch.where(finite, g, torch.zeros_like(g)) / torch.where(
            torch.isfinite(m) & (m > 0), m, torch.ones_like(m))
        idx = torch.clamp(torch.floor((s + 1.0) * (buckets / 2.0)), 0, buckets - 1).long()
        rows.append(torch.bincount(idx[finite], minlength=buckets).to(torch.float32))
    return torch.stack(rows)


def _max_abs(gs: list[torch.Tensor]) -> torch.Tensor:
    """Per tensor ``max |g|`` from ``torch.aminmax`` (one pass, NaN propagates): 0.23 ms for a
    20x256 MLP on a 2-core CPU, against 2.4 ms for ``_foreach_norm(inf)``, which takes ``abs``
    first."""
    # One stack of [min_0, max_0, min_1, max_1, ...]: each stack is 0.3 us per tensor.
    lo_hi = torch.stack([x for g in gs for x in (
        torch.aminmax(g) if g.numel() else (g.new_zeros(()), g.new_zeros(())))]).view(-1, 2)
    return torch.maximum(-lo_hi[:, 0], lo_hi[:, 1])


_ONES: dict[torch.device, torch.Tensor] = {}
_FUSED_CHECK: dict[str, bool] = {}
"""Device types on which the fused check raised (not tried again there)."""


def finite_guard(grads: list[Any]) -> torch.Tensor:
    """Every entry of every gradient finite, from one multi-tensor call.

    The call is ``torch._amp_foreach_non_finite_check_and_unscale_``, the check behind
    ``torch.amp.GradScaler``: one fused pass that sets a flag when an entry is NaN or inf, on
    CPU and CUDA alike. It also multiplies the tensors in place by its scale, here 1.0, which
    leaves every value as it was (the kernels return the value itself for a scale of 1). 0.12 ms
    for a 20 x 256 MLP's 42 gradients on a 2-core CPU, against 0.29 ms for one ``aminmax`` per
    tensor. Tensors spread over several devices, devices for which a torch build has no such
    kernel, and calls with autograd recording (where even a multiplication by 1 in place could
    invalidate a tensor saved for a backward pass) take the per-tensor extremes instead (NaN
    and inf show there). Keras' torch trainer applies the optimizer under ``torch.no_grad()``.

    Returns:
        A Python bool where the gradients are on the CPU: reading the flag there waits for
        nothing, and the step's branch and counters then need no tensor operations (about
        0.1 ms a step in ``fit``, where a Python call costs 3-4x what it costs in isolation).
        Elsewhere a boolean scalar tensor, so a GPU step need not wait for its host.
    """
    if not grads:
        return torch.tensor(True)
    gs = _f32(grads)
    device = gs[0].device
    if (_FUSED_CHECK.get(device.type, True) and not torch.is_grad_enabled()
            and all(g.device == device for g in gs)):
        one = _ONES.get(device)
        if one is None:
            one = _ONES[device] = torch.ones(1, device=device)
        found = torch.zeros(1, device=device)
        try:
            torch._amp_foreach_non_finite_check_and_unscale_(gs, found, one)
            return found.item() == 0 if device.type == "cpu" else found[0] == 0
        except (AttributeError, RuntimeError):  # no such op, or none for this device
            _FUSED_CHECK[device.type] = False
    return settled(torch.isfinite(_max_abs(gs)).all())


def settled(flag: torch.Tensor) -> bool | torch.Tensor:
    """``flag`` as a Python bool where reading it waits for nothing (a CPU tensor), else the
    tensor itself (a GPU need not wait for its host)."""
    return bool(flag) if flag.device.type == "cpu" else flag


@dataclass(frozen=True)
class _Shapes:
    """What :func:`direct_stats` needs of a list of gradient shapes, on their device."""

    sizes: torch.Tensor          # entries per tensor
    safe_sizes: torch.Tensor     # the same, at least 1
    floor: torch.Tensor          # direct_floor per tensor
    n_units: torch.Tensor        # units (last axis) per tensor
    scalar: torch.Tensor         # whether a tensor is 0-d
    small: torch.Tensor          # fewer than ZERO_CHECK_BELOW entries
    any_small: bool
    g_max: torch.Tensor          # DIRECT_MAX, per tensor
    w_max: torch.Tensor          # float32's largest finite value, per tensor
    zeros: torch.Tensor
    nan: torch.Tensor
    apart: frozenset[int]        # norms() positions for the gradients alone
    apart_both: frozenset[int]   # and for gradients + weights


_CONSTANTS: dict[tuple[Any, ...], _Shapes] = {}


def _constants(gs: list[torch.Tensor]) -> _Shapes:
    """The :class:`_Shapes` of ``gs``, made once per list of shapes: building them from Python
    lists every step is a blocking host-to-device copy on a GPU, which stalls the step until
    the device has caught up, and a dozen tensor operations on a CPU."""
    device = gs[0].device if gs else torch.device("cpu")
    key = (device, *(tuple(g.shape) for g in gs))
    found = _CONSTANTS.get(key)
    if found is None:
        if len(_CONSTANTS) >= 16:  # models come and go (tests, notebooks): keep a few
            _CONSTANTS.clear()

        def vector(values: list[Any], dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        sizes = [g.numel() for g in gs]
        n = len(gs)
        apart = _apart(gs, 2.0)
        found = _CONSTANTS[key] = _Shapes(
            sizes=vector(sizes), safe_sizes=vector([max(k, 1) for k in sizes]),
            floor=vector([direct_floor(k) for k in sizes]),
            n_units=vector([g.shape[-1] if g.dim() >= 2 else g.numel() for g in gs]),
            scalar=vector([g.dim() == 0 for g in gs], torch.bool),
            small=vector([k < ZERO_CHECK_BELOW for k in sizes], torch.bool),
            any_small=any(k < ZERO_CHECK_BELOW for k in sizes),
            g_max=vector([DIRECT_MAX] * n), w_max=vector([_F32_MAX] * n),
            zeros=vector([0.0] * n), nan=vector([math.nan] * n),
            apart=apart, apart_both=apart | frozenset(i + n for i in apart))
    return found


def direct_stats(grads: list[Any], weights: list[Any],
                 stats: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(table, ok)`` from one unscaled pass (see ``ops.stats.direct_stats``), with one
    multi-tensor call per statistic (the gradients' and the weights' norms in one).

    A row is ``ok`` when its largest magnitude ``m`` is 0 or within ``[direct_floor,
    DIRECT_MAX]`` (a NaN or inf entry makes ``m`` NaN or inf: torch's reductions propagate
    NaN, so no separate finiteness test is needed) and its weight norm within
    ``[direct_floor, float32 max]``, or 0 with every entry 0. ``weights`` have the gradients'
    shapes, as ``device_stats`` pairs them."""
    gs, ws = _f32(grads), _f32(weights)
    c = _constants(gs)
    nan = c.nan
    if "dead_unit_fraction" in stats:
        cols = [torch.linalg.vector_norm(_units(g), ord=_INF, dim=0) if g.dim() >= 2
                else g.abs().reshape(-1) for g in gs]
        m = norms(cols, _INF)
        live = norms(cols, 0)
        dead = torch.where(c.scalar | (c.n_units == 0), c.zeros,
                           1.0 - live / c.n_units.clamp(min=1.0))
    else:
        m = _max_abs(gs)
        dead = nan
    ok = (torch.clamp(m, c.floor, c.g_max) == m) | (m == 0)
    wnorm = nan
    if "weight_norm" in stats:
        both = norms(gs + ws, 2, c.apart_both)
        n = len(gs)
        norm, wnorm = both[:n], both[n:]
        w_ok = torch.clamp(wnorm, c.floor, c.w_max) == wnorm
        # A zero norm is exact when every entry is 0 (the zero-initialized biases of a fresh
        # model), as in ops.stats: small variables only, looked at only when a weight fails
        # (eager; the caller's cond reads `ok` on the host right after anyway).
        if c.any_small and not bool(w_ok.all()):
            zero = (wnorm == 0) & c.small
            if bool(zero.any()):
                idx = zero.nonzero().flatten()
                w_max = norms([ws[i] for i in idx.tolist()], _INF)
                w_ok = w_ok.index_put((idx,), w_max == 0)
        ok = ok & w_ok
    else:
        norm = norms(gs, 2, c.apart)
    std = nan
    if "grad_std" in stats:
        d1, d2 = [], []
        for g in gs:
            d = g.reshape(-1) - g.reshape(-1)[0] if g.numel() > 1 else g.new_zeros(1)
            d1.append(d.mean())
            d2.append((d * d).mean())
        d1s, d2s = torch.stack(d1), torch.stack(d2)
        std = torch.sqrt((d2s - d1s * d1s).clamp(min=0.0))
        ok = ok & ((m == 0) | (c.sizes <= 1) | (d2s >= 2.0 ** -106))
    col = {"grad_norm": norm, "grad_max_abs": m, "nonfinite_count": c.zeros,
           "weight_norm": wnorm, "grad_std": std, "dead_unit_fraction": dead,
           "grad_mean_abs": (norms(gs, 1, c.apart) / c.safe_sizes
                             if "grad_mean_abs" in stats else nan),
           "zero_fraction": (1.0 - norms(gs, 0, c.apart) / c.safe_sizes
                             if "zero_fraction" in stats else nan)}
    return torch.stack([col[k] if k in stats else nan for k in DEVICE_STATS], dim=1), ok


def write_row(rows: list[tuple[torch.Tensor, torch.Tensor]], ring_steps: torch.Tensor,
              slot: int, step: int) -> None:
    """Write one logged step into slot ``slot`` of its rings, in place.

    The ``keras.ops`` formulation (``slice_update`` then ``assign``) copies the whole ring
    twice and costs a dozen Python calls: a few tenths of a millisecond a step on a CPU.

    Args:
        rows: ``(ring, row)`` pairs: ``ring[slot] = row``.
        ring_steps: The ring of step numbers: ``ring_steps[slot] = step``.
        slot: The slot written.
        step: The step logged.
    """
    with torch.no_grad():
        for ring, row in rows:
            ring[slot].copy_(row)
        ring_steps[slot] = step


_STEP_DELTAS: dict[tuple[Any, ...], torch.Tensor] = {}


def count_step(counters: torch.Tensor, step_counter: torch.Tensor,
               finite: bool | torch.Tensor, step: int) -> None:
    """Count a step in place: ``counters += [1, not finite]``, ``counters[2] = step`` when not
    finite, ``step_counter += 1``.

    A flag that is a Python bool (:func:`finite_guard` on the CPU) makes it two in-place
    additions. A tensor flag is not read on the host (a GPU need not wait): the counters
    are then updated arithmetically from it.

    Args:
        counters: The monitor's ``[steps, nonfinite_steps, last_nonfinite_step]``.
        step_counter: The step number (an integer scalar).
        finite: The step's "every gradient finite" flag: a Python bool or a boolean scalar
            tensor.
        step: The step number, counted on the host.
    """
    with torch.no_grad():
        if isinstance(finite, torch.Tensor):
            bad = (~finite.reshape(())).to(counters.dtype)
            counters[0] += 1.0
            counters[1] += bad
            counters[2] += bad * (step - counters[2])
        else:
            key = (counters.device, counters.dtype, bool(finite))
            delta = _STEP_DELTAS.get(key)
            if delta is None:
                delta = _STEP_DELTAS[key] = torch.tensor(
                    [1.0, 0.0 if finite else 1.0, 0.0], dtype=counters.dtype,
                    device=counters.device)
            counters.add_(delta)
            if not finite:
                counters[2] = step
        step_counter.add_(1)

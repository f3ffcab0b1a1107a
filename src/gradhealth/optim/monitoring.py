"""The optimizer wrapper that takes gradient statistics inside the compiled train step.

:class:`gradhealth.GradientHealthMonitor` installs it on the model during ``fit``; it can also
be used on its own. It receives exactly the gradients the optimizer is about to apply and, per
step, on the device:

* runs the non-finite guard (on steps that log nothing one sum per gradient, on torch one
  fused check of them all; the wrapper then skips a NaN/inf step);
* on logged steps (``every``), reduces every gradient to the chosen :data:`DEVICE_STATS`
  (:func:`gradhealth.ops.stats.device_stats` with the backend's fused kernels from
  :mod:`gradhealth.adapters.fused`: one pass over each gradient and weight when the values
  allow it, as they nearly always do; the non-finite flag comes from the same pass) and writes
  them into a **ring buffer** of ``buffer_steps`` logged steps x variables, with the step
  number of each slot, so the host pulls the whole block now and then instead of one array per
  step;
* counts steps and non-finite steps; optionally clips.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
from keras import ops

from gradhealth._internal.validation import check_positive_float, check_positive_int
from gradhealth.adapters.fused import stats_kernels
from gradhealth.ops import stats as ops_stats
from gradhealth.ops.clipping import ops_clip_by_global_norm
from gradhealth.ops.stats import DEVICE_STATS, device_stats, resolve_stats
from gradhealth.optim.wrapper import GradientWrapperOptimizer

__all__ = ["C_LAST_NONFINITE", "C_NONFINITE", "C_STEPS", "DEFAULT_BUFFER_STEPS",
           "DEFAULT_HISTOGRAM_BUCKETS", "MonitoringOptimizer"]

# Layout of the counters variable (float32 holds integers exactly up to 2**24 steps).
C_STEPS, C_NONFINITE, C_LAST_NONFINITE = 0, 1, 2
N_COUNTERS = 3

_NONFINITE = DEVICE_STATS.index("nonfinite_count")
_MAX_ABS = DEVICE_STATS.index("grad_max_abs")
_MAGNITUDES = np.array([c in ("grad_norm", "grad_mean_abs", "grad_max_abs", "grad_std")
                        for c in DEVICE_STATS])
"""The columns a loss scale multiplies (the gradient magnitudes)."""

DEFAULT_BUFFER_STEPS = 32
"""Logged steps held on the device between two host pulls. 32 x (variables x 8) float32 is a
few kilobytes to a few hundred (a 200-variable model: 200 kB); pulling every 32 steps turns the
per-step host round trip (~20% of a GPU step in the issue's measurements) into ~1/32 of it."""

DEFAULT_HISTOGRAM_BUCKETS = 30
"""Buckets of the per-variable gradient histograms for TensorBoard: TensorBoard's own default
(``tf.summary.histogram(buckets=30)``)."""

@keras.saving.register_keras_serializable(package="gradhealth")
class MonitoringOptimizer(GradientWrapperOptimizer):
    """The optimizer wrapper the monitor installs; usable on its own.

    Args:
        optimizer: The optimizer that applies the updates (instance or name).
        every: Compute statistics on steps ``0, every, 2*every, ...`` (counted from the last
            :meth:`reset_counters`).
        skip_nonfinite: Do not apply a step whose gradients hold NaN/inf.
        clip_norm: When set, clip the global gradient norm to this value every step (after
            the statistics are taken).
        buffer_steps: Logged steps the device ring buffer holds
            (:data:`DEFAULT_BUFFER_STEPS`); the reader must pull before it wraps around.
        histogram_buckets: When positive, also keep per-variable gradient histograms with this
            many buckets in a second ring (for TensorBoard); 0 computes none.
        stats: Which statistics to compute on logged steps: ``"core"`` (default,
            :data:`gradhealth.ops.stats.CORE_STATS`: norm, largest magnitude, non-finite count,
            weight norm -- one pass over each gradient and weight), ``"all"``
            (:data:`DEVICE_STATS`) or a list of names; the ring holds NaN for the others.
        name: Optimizer name.

    Attributes:
        ring: Variable ``(buffer_steps, n_variables, len(DEVICE_STATS))``: the statistics of
            logged step ``k * every`` live in slot ``k % buffer_steps``.
        ring_steps: Variable ``(buffer_steps,)``: the step held in each slot (-1: empty).
        hist_ring: ``(buffer_steps, n_variables, histogram_buckets)`` counts over
            ``[-grad_max_abs, grad_max_abs]``, or None.
        counters: Variable ``[steps, nonfinite_steps, last_nonfinite_step]``.
        connected: Per trainable variable, False where the train step passed no gradient.

    Example:
        >>> model.compile(optimizer=MonitoringOptimizer("adam", every=10), loss="mse")
    """

    def __init__(self, optimizer: Any, every: int = 1, skip_nonfinite: bool = True,
                 clip_norm: float | None = None, buffer_steps: int = DEFAULT_BUFFER_STEPS,
                 histogram_buckets: int = 0, stats: str | Iterable[str] = "core",
                 name: str | None = None) -> None:
        every = check_positive_int("every", every)
        chosen = resolve_stats(stats)
        buffer_steps = check_positive_int("buffer_steps", buffer_steps)
        if not isinstance(histogram_buckets, int) or isinstance(histogram_buckets, bool) or (
                histogram_buckets < 0):
            raise ValueError("Argument `histogram_buckets` must be a non-negative integer. "
                             f"Received: histogram_buckets={histogram_buckets!r}")
        if clip_norm is not None:
            clip_norm = check_positive_float("clip_norm", clip_norm)
        super().__init__(optimizer, skip_nonfinite=skip_nonfinite, name=name)
        self.every = every
        self.clip_norm = clip_norm
        self.buffer_steps = buffer_steps
        self.histogram_buckets = histogram_buckets
        # The histogram buckets span [-max|g|, max|g|].
        self.stats = resolve_stats([*chosen, "grad_max_abs"]) if histogram_buckets else chosen
        self.connected: list[bool] = []
        self.hist_ring: Any = None
        self._kernels = stats_kernels(ops_stats)
        # Steps counted on the host since reset_counters: torch runs eagerly, so its log/no-log
        # branch needs no device read.
        self._host_step = 0

    @property
    def loss_scaled(self) -> bool:
        """Whether the inner optimizer is a ``LossScaleOptimizer`` (mixed precision)."""
        return isinstance(self.inner_optimizer, keras.optimizers.LossScaleOptimizer)

    def build_own(self, var_list: list[Any]) -> None:
        self.monitored_paths = [v.path for v in var_list]
        self.connected = [True] * len(var_list)
        n = max(len(var_list), 1)
        self.ring = self.add_variable(
            shape=(self.buffer_steps, n, len(DEVICE_STATS)), dtype="float32",
            initializer=keras.initializers.Zeros(), aggregation="none", name="grad_stats_ring")
        self.ring_steps = self.add_variable(
            shape=(self.buffer_steps,), dtype="int32",
            initializer=keras.initializers.Constant(-1), aggregation="none",
            name="grad_stats_steps")
        if self.histogram_buckets:
            self.hist_ring = self.add_variable(
                shape=(self.buffer_steps, n, self.histogram_buckets), dtype="float32",
                initializer=keras.initializers.Zeros(), aggregation="none",
                name="grad_hist_ring")
        self.counters = self.add_variable(
            shape=(N_COUNTERS,), dtype="float32", initializer=keras.initializers.Zeros(),
            aggregation="none", name="grad_counters")
        self.step_counter = self.add_variable(
            shape=(), dtype="int32", initializer=keras.initializers.Zeros(), aggregation="none",
            name="monitor_step")

    def reset_counters(self) -> None:
        """Start counting steps (and logging from step 0) again: call before a new ``fit``."""
        self._host_step = 0
        if self.built:
            self.step_counter.assign(0)
            self.counters.assign(np.zeros(N_COUNTERS, dtype="float32"))
            self.ring_steps.assign(np.full(self.buffer_steps, -1, dtype="int32"))

    needs_finite = True
    transparent = True  # checkpoints taken during fit hold the user's optimizer

    # -- the device passes ------------------------------------------------------------------
    def _log_now(self) -> Any:
        if self.every == 1:
            # Every step logs: no conditional in the graph (a TF cond costs tracing time, and
            # a branch call per step).
            return True
        if keras.backend.backend() == "torch":
            return self._host_step % self.every == 0
        step = ops.convert_to_tensor(self.step_counter)
        return ops.equal(ops.mod(step, self.every), 0)

    @property
    def _in_place(self) -> bool:
        """Whether this step writes the rings and counters in place: an eager backend's kernels
        (torch: :func:`gradhealth.adapters.torch_kernels.write_row` and ``count_step``), outside
        ``stateless_apply``, whose variables read the values handed in."""
        return getattr(self._kernels, "write_row", None) is not None and \
            not self._in_stateless_apply

    def reads_weights(self) -> bool:
        """Only logged steps look at the weights; on torch (steps run eagerly, counted on the
        host) the others need not read them."""
        return not self._in_place or bool(self._log_now())

    def _rings(self) -> list[Any]:
        rings = [self.ring, self.ring_steps]
        return rings + [self.hist_ring] if self.hist_ring is not None else rings

    def finite_flag(self, grads: list[Any], weights: list[Any]) -> Any:
        """The guard, and on logged steps the statistics.

        On a logged step the gradients are reduced once (:func:`gradhealth.ops.stats.
        device_stats`: one pass over each gradient and weight when their values allow it) and
        the row is written into the ring; the non-finite flag comes from the same numbers. On
        other steps only the guard runs: one sum per gradient
        (:func:`gradhealth.ops.stats.finite_guard`), or on torch one fused check of every
        gradient (:func:`gradhealth.adapters.torch_kernels.finite_guard`).
        """
        connected = [g is not None for g in grads]
        if connected != self.connected:
            # Assigning a list makes Keras track it element by element (0.06 ms a step for 42
            # variables on torch, where this runs every step): only when it changes.
            self.connected = connected
        present = [g for g in grads if g is not None]
        if not present:
            return ops.convert_to_tensor(True)
        k = self._kernels
        if self._in_place:
            return self._eager_flag(grads, weights, present)
        step = ops.convert_to_tensor(self.step_counter)

        def logged() -> tuple[Any, ...]:
            filled, table = self._table(grads, weights)
            finite = ops.equal(ops.sum(table[:, _NONFINITE]), 0.0)
            slot = ops.mod(ops.floor_divide(step, self.every), self.buffer_steps)
            out = [finite,
                   ops.slice_update(ops.convert_to_tensor(self.ring), (slot, 0, 0),
                                    table[None]),
                   ops.slice_update(ops.convert_to_tensor(self.ring_steps), (slot,),
                                    ops.reshape(ops.cast(step, "int32"), (1,)))]
            if self.hist_ring is not None:
                out.append(ops.slice_update(ops.convert_to_tensor(self.hist_ring), (slot, 0, 0),
                                            self._histograms(filled, table)[None]))
            return tuple(out)

        def light() -> tuple[Any, ...]:
            return (k.finite_guard(present),
                    *(ops.convert_to_tensor(r) for r in self._rings()))

        out = k.cond(self._log_now(), logged, light)
        for variable, value in zip(self._rings(), out[1:], strict=True):
            variable.assign(value)
        return out[0]

    def _table(self, grads: list[Any], weights: list[Any]) -> tuple[list[Any], Any]:
        """The gradients with zeros where none, and their statistics (one row each)."""
        filled = [ops.zeros_like(w) if g is None else g
                  for g, w in zip(grads, weights, strict=True)]
        table = ops.cast(device_stats(filled, weights, kernels=self._kernels, stats=self.stats),
                         "float32")
        if self.loss_scaled:
            # Report the unscaled gradients: the magnitudes times 1/scale (a power of two).
            unscale = 1.0 / ops.cast(
                ops.convert_to_tensor(self.inner_optimizer.dynamic_scale), "float32")
            table = table * ops.where(ops.convert_to_tensor(_MAGNITUDES), unscale, 1.0)
        return filled, table

    def _histograms(self, filled: list[Any], table: Any) -> Any:
        m = table[:, _MAX_ABS]
        scan = ops.expand_dims(ops.where(ops.isfinite(m), m, 0.0), 1)
        return ops.cast(self._kernels.grad_histograms(filled, scan, self.histogram_buckets),
                        "float32")

    def _eager_flag(self, grads: list[Any], weights: list[Any], present: list[Any]) -> Any:
        """:meth:`finite_flag` where the step runs eagerly (torch): the step is counted on the
        host, and the row is written into the ring in place
        (:func:`gradhealth.adapters.torch_kernels.write_row`), not through ``slice_update``
        and ``assign``, which copy the whole ring twice."""
        if not self._log_now():
            return self._kernels.finite_guard(present)
        step = self._host_step
        filled, table = self._table(grads, weights)
        slot = (step // self.every) % self.buffer_steps
        rows = [(self.ring.value, table)]
        if self.hist_ring is not None:
            rows.append((self.hist_ring.value, self._histograms(filled, table)))
        self._kernels.write_row(rows, self.ring_steps.value, slot, step)
        return self._kernels.settle(table[:, _NONFINITE].sum() == 0)

    def transform(self, grads: list[Any], weights: list[Any], finite: Any = None) -> list[Any]:
        if finite is None:
            finite = self.finite_flag(grads, weights)
        if self._in_place:
            self._kernels.count_step(self.counters.value, self.step_counter.value, finite,
                                     self._host_step)
        else:
            step = ops.convert_to_tensor(self.step_counter)
            finite = ops.cast(finite, "float32")
            counters = ops.convert_to_tensor(self.counters)
            self.counters.assign(ops.stack([
                counters[C_STEPS] + 1.0,
                counters[C_NONFINITE] + (1.0 - finite),
                finite * counters[C_LAST_NONFINITE] + (1.0 - finite) * ops.cast(step, "float32"),
            ]))
            self.step_counter.assign(step + 1)
        if keras.backend.backend() == "torch":  # eager: this runs once per step
            self._host_step += 1
        if self.clip_norm is not None:
            grads = ops_clip_by_global_norm(grads, self.clip_norm)[0]
        return grads

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(every=self.every, clip_norm=self.clip_norm,
                      buffer_steps=self.buffer_steps,
                      histogram_buckets=self.histogram_buckets, stats=list(self.stats))
        return config

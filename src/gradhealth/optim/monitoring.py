"""The optimizer wrapper that takes gradient statistics inside the compiled train step.

:class:`gradhealth.GradientHealthMonitor` installs it on the model during ``fit``; it can also
be used on its own. It receives exactly the gradients the optimizer is about to apply, reduces
each one on the device (:func:`gradhealth.ops.stats.device_stats`), keeps step counters, skips
non-finite steps and optionally clips.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from gradhealth._internal.validation import check_positive_float, check_positive_int
from gradhealth.ops.clipping import ops_clip_by_global_norm
from gradhealth.ops.stats import DEVICE_STATS, device_stats
from gradhealth.optim.wrapper import GradientWrapperOptimizer

__all__ = ["C_LAST_NONFINITE", "C_NONFINITE", "C_STEPS", "MonitoringOptimizer"]

# Layout of the counters variable (float32 holds integers exactly up to 2**24 steps).
C_STEPS, C_NONFINITE, C_LAST_NONFINITE = 0, 1, 2
N_COUNTERS = 3


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
        name: Optimizer name.

    Attributes:
        stats: Variable of shape ``(n_variables, len(DEVICE_STATS))``: the last logged step.
        counters: Variable ``[steps, nonfinite_steps, last_nonfinite_step]``.
        connected: Per trainable variable, False where the train step passed no gradient.
    """

    def __init__(self, optimizer: Any, every: int = 1, skip_nonfinite: bool = True,
                 clip_norm: float | None = None, name: str | None = None) -> None:
        every = check_positive_int("every", every)
        if clip_norm is not None:
            clip_norm = check_positive_float("clip_norm", clip_norm)
        super().__init__(optimizer, skip_nonfinite=skip_nonfinite, name=name)
        self.every = every
        self.clip_norm = clip_norm
        self.connected: list[bool] = []

    @property
    def loss_scaled(self) -> bool:
        """Whether the inner optimizer is a ``LossScaleOptimizer`` (mixed precision)."""
        return isinstance(self.inner_optimizer, keras.optimizers.LossScaleOptimizer)

    def build_own(self, var_list: list[Any]) -> None:
        self.monitored_paths = [v.path for v in var_list]
        self.connected = [True] * len(var_list)
        self.stats = self.add_variable(
            shape=(max(len(var_list), 1), len(DEVICE_STATS)), dtype="float32",
            initializer=keras.initializers.Zeros(), aggregation="none", name="grad_stats")
        self.counters = self.add_variable(
            shape=(N_COUNTERS,), dtype="float32", initializer=keras.initializers.Zeros(),
            aggregation="none", name="grad_counters")
        self.step_counter = self.add_variable(
            shape=(), dtype="int32", initializer=keras.initializers.Zeros(), aggregation="none",
            name="monitor_step")

    def reset_counters(self) -> None:
        """Start counting steps (and logging from step 0) again: call before a new ``fit``."""
        if self.built:
            self.step_counter.assign(0)
            self.counters.assign(np.zeros(N_COUNTERS, dtype="float32"))

    needs_finite = True
    transparent = True  # checkpoints taken during fit hold the user's optimizer

    def transform(self, grads: list[Any], weights: list[Any], finite: Any = None) -> list[Any]:
        self.connected = [g is not None for g in grads]
        step = ops.convert_to_tensor(self.step_counter)
        log_now = ops.equal(ops.mod(step, self.every), 0)
        unscale = (1.0 / ops.convert_to_tensor(self.inner_optimizer.dynamic_scale)
                   if self.loss_scaled else None)

        def compute() -> Any:
            filled = []
            for g, w in zip(grads, weights, strict=True):
                if g is None:
                    g = ops.zeros_like(w)
                elif unscale is not None:
                    g = ops.cast(g, "float32") * unscale
                filled.append(g)
            return device_stats(filled, weights)

        def keep() -> Any:
            return ops.convert_to_tensor(self.stats)

        self.stats.assign(ops.cond(log_now, compute, keep))
        finite = ops.cast(self.all_finite(grads) if finite is None else finite, "float32")
        counters = ops.convert_to_tensor(self.counters)
        self.counters.assign(ops.stack([
            counters[C_STEPS] + 1.0,
            counters[C_NONFINITE] + (1.0 - finite),
            finite * counters[C_LAST_NONFINITE] + (1.0 - finite) * ops.cast(step, "float32"),
        ]))
        self.step_counter.assign(step + 1)
        if self.clip_norm is not None:
            grads = ops_clip_by_global_norm(grads, self.clip_norm)[0]
        return grads

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(every=self.every, clip_norm=self.clip_norm)
        return config

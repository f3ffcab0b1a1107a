"""Watch the gradients ``model.fit`` applies, every step, for almost nothing.

Attach the monitor like any callback -- it installs itself::

    monitor = gradhealth.GradientHealthMonitor(every=1, on_explosion="warn")
    model.fit(x, y, epochs=5, callbacks=[monitor])
    monitor.history      # tidy DataFrame: one row per (logged step, variable)
    monitor.alerts       # early warnings: step, kind, layer, numbers, message
    monitor.plot()

How it works: when ``fit`` hands the callback its model (``set_model``), the monitor wraps the
model's optimizer in a :class:`MonitoringOptimizer` -- an optimizer that wraps another the way
Keras' own ``LossScaleOptimizer`` does -- and asks Keras to rebuild the train function. Inside
the compiled train step of every backend (TensorFlow ``tf.function``, JAX ``jit`` through
``stateless_apply``, torch) the wrapper receives exactly the gradients the optimizer is about
to apply, reduces each one on the device to eight numbers (norm, mean/max magnitude, std,
zero fraction, non-finite count, weight norm, dead-unit fraction; scaled so float32 never
underflows), stores them in one optimizer variable, skips the update when a gradient is NaN/inf
(``on_nonfinite="skip"``) and optionally clips. The statistics are only computed on logged
steps (``every``). The callback pulls that single small array to the host once per logged step
and feeds the norms to the explosion detectors of :mod:`gradhealth.core.detect`. When training ends
the model gets its original optimizer back.

Notes:
    * Statistics describe the gradients handed to the optimizer, before any clipping it does
      (``clipnorm``, a :class:`gradhealth.ClippingOptimizer`, ``on_explosion="clip"``).
    * Under mixed precision (a ``LossScaleOptimizer``) the statistics are of the unscaled
      gradients; overflowing steps are the loss-scale optimizer's business (it skips them and
      lowers its scale), so they are counted in ``skipped_steps`` but raise no alert.
    * ``steps_per_execution`` must be 1 (the default) so that one callback call is one step.
    * Cost (``benchmarks/monitor_overhead.py``): statistics are a few reductions per variable on
      logged steps; skipping non-finite steps makes the optimizer update conditional (as
      ``LossScaleOptimizer`` does), which XLA (JAX) absorbs but a TensorFlow CPU graph pays for
      on every step; ``on_nonfinite="warn"`` removes that conditional.
    * Each ``fit`` with the monitor retraces the train step once (the optimizer changes), and
      the model gets its own optimizer back in ``on_train_end``.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradhealth._internal.io import atomic_write_text
from gradhealth._internal.validation import check_choice, check_positive_float, check_positive_int
from gradhealth.adapters import tensorboard
from gradhealth.adapters.keras_compat import jax_train_state_value
from gradhealth.core.detect import DEFAULT_MAX_NORM, GLOBAL, Alert, ExplosionDetector
from gradhealth.core.stats import STAT_COLUMNS, combine_norms
from gradhealth.core.thresholds import Thresholds
from gradhealth.ops.stats import DEVICE_STATS
from gradhealth.optim.monitoring import C_LAST_NONFINITE, C_NONFINITE, MonitoringOptimizer
from gradhealth.report.monitor_plots import plot_monitor

__all__ = ["HISTORY_COLUMNS", "GradientHealthMonitor", "GradientHealthWarning"]

ON_NONFINITE: tuple[str, ...] = ("skip", "stop", "warn")
ON_EXPLOSION: tuple[str, ...] = ("warn", "stop", "clip")
EXPLOSION_KINDS: tuple[str, ...] = ("threshold", "growth", "spike")
HISTORY_COLUMNS: tuple[str, ...] = ("step", "epoch", "batch", "loss", "layer", "variable", "path",
                                    *STAT_COLUMNS, "connected", "global_norm", "skipped",
                                    "status")


class GradientHealthWarning(RuntimeWarning):
    """Warning category of the monitor's alerts (filter it with :mod:`warnings`)."""


class GradientHealthMonitor(keras.callbacks.Callback):
    """Real-time gradient statistics, explosion early warning and protection in ``model.fit``.

    Args:
        every: Log statistics every this many steps (1 = every step). Non-finite gradients
            are caught on every step regardless.
        on_nonfinite: What to do with a step whose gradients hold NaN/inf: ``"skip"`` (default:
            the update is not applied, weights stay finite, training continues), ``"stop"``
            (skip it and stop training after that step) or ``"warn"`` (apply it anyway and warn).
        on_explosion: What to do when a detector fires: ``"warn"`` (default), ``"stop"``
            (stop training at that step) or ``"clip"`` (warn, and clip the global gradient norm
            to ``max_norm`` on every step).
        max_norm: The explosion threshold (and the clipping limit for ``"clip"``); default
            :data:`gradhealth.core.detect.DEFAULT_MAX_NORM`.
        detector: An :class:`gradhealth.core.detect.ExplosionDetector` to use instead of the
            default one built from ``max_norm``.
        log_dir: Folder for TensorBoard event files (per-layer norm and ratio scalars, the
            global norm and the loss). Needs TensorFlow installed (it is a gradhealth
            dependency); view them with ``tensorboard --logdir`` (``pip install tensorboard``).
        csv: Path of a CSV log, rewritten at the start of each ``fit`` and appended (one
            complete write, flushed) at every logged step, so a killed run leaves a readable
            log.
        verbose: When truthy, alerts are also printed.

    Raises:
        ValueError, TypeError: Invalid arguments (named in the message).

    Example:
        >>> monitor = GradientHealthMonitor(every=10, on_nonfinite="skip")
        >>> model.fit(x, y, epochs=3, callbacks=[monitor], verbose=0)
        >>> monitor.history.groupby("layer").grad_norm.max()
    """

    def __init__(self, every: int = 1, on_nonfinite: str = "skip", on_explosion: str = "warn",
                 max_norm: float = DEFAULT_MAX_NORM, detector: ExplosionDetector | None = None,
                 log_dir: str | os.PathLike | None = None, csv: str | os.PathLike | None = None,
                 verbose: bool = False) -> None:
        super().__init__()
        self.every = check_positive_int("every", every)
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, ON_NONFINITE)
        self.on_explosion = check_choice("on_explosion", on_explosion, ON_EXPLOSION)
        self.max_norm = check_positive_float("max_norm", max_norm)
        if detector is not None and not isinstance(detector, ExplosionDetector):
            raise TypeError(
                "Argument `detector` must be a gradhealth.core.detect.ExplosionDetector or None. "
                f"Received: detector={detector!r} (of type {type(detector).__name__})")
        self.detector = detector if detector is not None else ExplosionDetector(max_norm=max_norm)
        for arg, value in (("log_dir", log_dir), ("csv", csv)):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"Argument `{arg}` must be a path or None. Received: {arg}={value!r}")
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.csv = Path(csv) if csv is not None else None
        self.verbose = bool(verbose)
        self._optimizer: MonitoringOptimizer | None = None
        self._writer: Any = None
        self._reset_state()

    # -- state --------------------------------------------------------------------------------
    def _reset_state(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._frame: pd.DataFrame | None = None
        self.alerts: list[Alert] = []
        self.skipped_steps: list[int] = []
        self.stopped_at: int | None = None
        self._step = 0
        self._epoch = 0
        self._seen_nonfinite = 0
        self.detector.reset()

    @property
    def history(self) -> pd.DataFrame:
        """Tidy DataFrame, one row per (logged step, trainable variable), columns
        :data:`HISTORY_COLUMNS`; ``status`` is ``ok``, ``vanishing``, ``exploding`` or
        ``nonfinite``."""
        if self._frame is None:
            self._frame = pd.DataFrame(self._rows, columns=list(HISTORY_COLUMNS))
        return self._frame

    @property
    def alerts_frame(self) -> pd.DataFrame:
        """The alerts as a DataFrame (``step, kind, layer, value, threshold, reference,
        message``)."""
        return pd.DataFrame([a.to_dict() for a in self.alerts],
                            columns=["step", "kind", "layer", "value", "threshold", "reference",
                                     "message"])

    # -- installation -------------------------------------------------------------------------
    def wrap(self, optimizer: Any) -> MonitoringOptimizer:
        """Wrap ``optimizer`` (an instance or name) in this monitor's :class:`MonitoringOptimizer`.

        ``fit`` does this automatically; call it yourself to compile with the wrapper.
        """
        if isinstance(optimizer, MonitoringOptimizer):
            optimizer = optimizer.inner_optimizer
        return MonitoringOptimizer(
            optimizer, every=self.every, skip_nonfinite=self.on_nonfinite != "warn",
            clip_norm=self.max_norm if self.on_explosion == "clip" else None)

    def set_model(self, model: keras.Model) -> None:
        """Install the monitoring optimizer on ``model`` (called by ``fit``)."""
        if not isinstance(model, keras.Model):
            raise TypeError("GradientHealthMonitor works on keras.Model instances. "
                            f"Received: model={model!r} (of type {type(model).__name__})")
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None or not getattr(model, "compiled", False):
            raise ValueError(
                f"GradientHealthMonitor needs a compiled model: call model.compile(optimizer=..., "
                f"loss=...) before model.fit. Received: model {model.name!r} with optimizer="
                f"{optimizer!r}")
        if isinstance(optimizer, str):
            raise TypeError(
                "GradientHealthMonitor needs the model's optimizer to be a keras.optimizers."
                "Optimizer instance; compile with optimizer='adam' (compile turns names into "
                f"instances) instead of setting the attribute. Received: optimizer={optimizer!r}")
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "GradientHealthMonitor needs a keras.optimizers.Optimizer. Received: "
                f"optimizer={optimizer!r} (of type {type(optimizer).__name__})")
        super().set_model(model)
        if optimizer is not self._optimizer:
            wrapper = optimizer if isinstance(optimizer, MonitoringOptimizer) else None
            if wrapper is None or (wrapper.every, wrapper.skip_nonfinite, wrapper.clip_norm) != (
                    self.every, self.on_nonfinite != "warn",
                    self.max_norm if self.on_explosion == "clip" else None):
                wrapper = self.wrap(optimizer)
            if not wrapper.built and model.built:
                # Create the variables now: a tf.function that creates variables while tracing
                # is traced twice.
                wrapper.build(model.trainable_variables)
            model.optimizer = wrapper
            self._optimizer = wrapper
            model.make_train_function(force=True)

    def _uninstall(self) -> None:
        model, wrapper = getattr(self, "_model", None), self._optimizer
        if model is not None and wrapper is not None and model.optimizer is wrapper:
            model.optimizer = wrapper.inner_optimizer
            model.make_train_function(force=True)
        self._optimizer = None

    # -- reading device state -----------------------------------------------------------------
    def _read(self, variable: Any) -> np.ndarray:
        """One host pull of ``variable``'s current value (JAX: from the running train state,
        which ``fit`` only writes back to the variables at the end of each epoch)."""
        running = jax_train_state_value(getattr(self, "_model", None), self._optimizer, variable)
        if running is not None:
            return running
        return np.asarray(keras.ops.convert_to_numpy(variable.value))

    # -- callback hooks -----------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        self._reset_state()
        if self._optimizer is None:
            raise ValueError("GradientHealthMonitor has no model: fit() calls set_model; when "
                             "calling hooks by hand call monitor.set_model(model) first.")
        self._optimizer.reset_counters()
        if self.csv is not None:
            atomic_write_text(self.csv, ",".join(HISTORY_COLUMNS) + "\n")
        if self.log_dir is not None:
            self._writer = tensorboard.create_writer(self.log_dir)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = int(epoch)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = self._step
        self._step += 1
        log_now = step % self.every == 0
        if log_now or self.on_nonfinite == "stop":
            self._check_nonfinite(step)
        if log_now:
            self._log_step(step, int(batch), logs or {})

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._optimizer is not None and self._optimizer.built:
            self._check_nonfinite(self._step - 1)
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
        self._uninstall()

    # -- work -----------------------------------------------------------------------------------
    def _check_nonfinite(self, step: int) -> None:
        wrapper = self._optimizer
        counters = self._read(wrapper.counters)
        total = int(counters[C_NONFINITE])
        new = total - self._seen_nonfinite
        if new <= 0:
            return
        self._seen_nonfinite = total
        last = int(counters[C_LAST_NONFINITE])
        if wrapper._skips():
            self.skipped_steps.append(last)
        if wrapper.loss_scaled:
            return  # overflow steps are handled by the LossScaleOptimizer (see module notes)
        action = {"skip": "update skipped", "stop": "update skipped; stopping",
                  "warn": "update APPLIED (on_nonfinite='warn')"}[self.on_nonfinite]
        extra = f" ({new} such steps since the last check)" if new > 1 else ""
        self._alert(Alert(last, "nonfinite", GLOBAL, math.nan, math.nan, float(new),
                          f"step {last}: non-finite gradients{extra}; {action}"),
                    warn=self.on_nonfinite != "skip")
        if self.on_nonfinite == "stop" and self._model is not None:
            self._model.stop_training = True
            if self.stopped_at is None:
                self.stopped_at = last

    def _alert(self, alert: Alert, warn: bool) -> None:
        self.alerts.append(alert)
        if warn:
            warnings.warn(alert.message, GradientHealthWarning, stacklevel=3)
        if self.verbose:
            print(f"[gradhealth] {alert.message}")

    def _log_step(self, step: int, batch: int, logs: dict) -> None:
        wrapper = self._optimizer
        stats = self._read(wrapper.stats)
        loss = logs.get("loss", math.nan)
        loss = float(loss) if loss is not None else math.nan
        paths = wrapper.monitored_paths
        connected = list(wrapper.connected) if wrapper.connected else [True] * len(paths)
        skipped = bool(self.skipped_steps and self.skipped_steps[-1] == step)
        t = Thresholds()
        layer_norms: dict[str, list[float]] = {}
        rows = []
        for i, path in enumerate(paths):
            s = dict(zip(DEVICE_STATS, (float(v) for v in stats[i]), strict=True))
            s["nonfinite_count"] = int(round(s["nonfinite_count"]))
            wn = s["weight_norm"]
            s["grad_to_weight"] = s["grad_norm"] / wn if wn > 0 else math.nan
            layer = path.rsplit("/", 1)[0] if "/" in path else path
            layer_norms.setdefault(layer, []).append(s["grad_norm"])
            if s["nonfinite_count"] > 0:
                status = "nonfinite"
            elif s["grad_norm"] > self.max_norm:
                status = "exploding"
            elif connected[i] and s["grad_norm"] < t.vanishing_norm:
                status = "vanishing"
            else:
                status = "ok"
            rows.append({"step": step, "epoch": self._epoch, "batch": batch, "loss": loss,
                         "layer": layer, "variable": path.rsplit("/", 1)[-1], "path": path,
                         **{c: s[c] for c in STAT_COLUMNS}, "connected": connected[i],
                         "global_norm": math.nan, "skipped": skipped, "status": status})
        # A step whose gradients hold NaN/inf has no meaningful global norm: report NaN (the
        # per-variable norms still describe the finite entries, as tensor_stats does).
        any_bad = any(r["nonfinite_count"] > 0 for r in rows)
        gnorm = math.nan if any_bad else combine_norms([r["grad_norm"] for r in rows])
        for r in rows:
            r["global_norm"] = gnorm
        self._rows.extend(rows)
        self._frame = None
        norms = {k: combine_norms(v) for k, v in layer_norms.items()}
        for alert in self.detector.update(step, norms, global_norm=gnorm):
            if alert.kind == "nonfinite":
                continue  # reported from the device counters instead
            self._alert(alert, warn=True)
            if self.on_explosion == "stop" and alert.kind in EXPLOSION_KINDS:
                self._model.stop_training = True
                if self.stopped_at is None:
                    self.stopped_at = step
        if self.csv is not None:
            self._append_csv(rows)
        if self._writer is not None:
            self._write_tensorboard(step, norms, rows, gnorm, loss)

    def _append_csv(self, rows: list[dict[str, Any]]) -> None:
        text = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)).to_csv(header=False, index=False)
        # One write of whole lines on an O_APPEND descriptor, then fsync: a run killed between
        # logged steps leaves only complete rows.
        fd = os.open(self.csv, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_tensorboard(self, step: int, norms: dict[str, float], rows: list[dict[str, Any]],
                           gnorm: float, loss: float) -> None:
        ratios: dict[str, float] = {}
        for r in rows:
            if r["variable"] == "kernel":
                ratios[r["layer"]] = r["grad_to_weight"]
        scalars = {"gradients/global_norm": gnorm, "loss": loss}
        scalars.update({f"grad_norm/{k}": v for k, v in norms.items()})
        scalars.update({f"grad_to_weight/{k}": v for k, v in ratios.items()})
        tensorboard.write_scalars(self._writer, step, scalars)

    # -- figures ------------------------------------------------------------------------------
    def plot(self, kind: str = "both") -> Any:
        """Figures of the history: ``"norms"`` (norm per layer over steps), ``"heatmap"``
        (layer x step) or ``"both"``; see :mod:`gradhealth.report.monitor_plots`."""
        return plot_monitor(self.history, alerts=self.alerts, kind=kind)

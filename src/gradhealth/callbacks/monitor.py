"""Watch the gradients ``model.fit`` applies, every step, with the work kept on the device.

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
to apply, checks them for NaN/inf (every step, on the device; ``on_nonfinite="skip"`` then
skips the update) and, on logged steps (``every``), reduces each one in two passes to eight
numbers (norm, mean/max magnitude, std, zero fraction, non-finite count, weight norm,
dead-unit fraction; exact from 1e-30 to 1e30) written into a ring buffer on the device. The
callback pulls the whole buffer every ``buffer_steps`` logged steps or ``pull_seconds``
(and at each epoch's end), then builds the history and runs the explosion detectors of
:mod:`gradhealth.core.detect` over the block in step order. When training ends the model gets
its original optimizer back.

Notes:
    * Statistics describe the gradients handed to the optimizer, before any clipping it does
      (``clipnorm``, a :class:`gradhealth.ClippingOptimizer`, ``on_explosion="clip"``).
    * Under mixed precision (a ``LossScaleOptimizer``) the statistics are of the unscaled
      gradients; overflowing steps are the loss-scale optimizer's business (it skips them and
      lowers its scale), so they are counted in ``skipped_steps`` but raise no alert.
    * ``steps_per_execution > 1`` (TensorFlow, JAX) is supported: every logged step of a
      block is recorded, the device ring is made large enough for a block, and steps are
      counted from the device at each epoch's end. Only the step Keras reports a block by has
      a ``loss``.
    * Cost: ``benchmarks/monitor_overhead.py`` prints it; the README lists measured ratios.
      Skipping non-finite steps makes the optimizer update conditional (as
      ``LossScaleOptimizer`` does); ``on_nonfinite="warn"`` removes that conditional.
    * A crash loses the logged steps not yet pulled (at most ``buffer_steps`` logged steps or
      ``pull_seconds``); the CSV and TensorBoard logs hold every pulled step, whole.
    * The first ``fit`` with the monitor traces the monitored train step; a later ``fit`` of
      the same model, compiled the same way, with a monitor of the same settings reuses it.
      The model gets its own optimizer and train function back in ``on_train_end``.
    * The monitor is ``async_safe`` unless a stop policy is set, so ``fit`` need not wait for
      each step to finish (Keras converts the logs of a callback that is not async-safe in the
      training loop): ``on_train_batch_end`` only records the step and may run in Keras'
      worker threads; the device ring is read on the training thread, in
      ``on_train_batch_begin`` and at the end of each epoch.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections.abc import Iterable
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
from gradhealth.core.stats import STAT_COLUMNS
from gradhealth.core.thresholds import Thresholds
from gradhealth.ops.stats import DEVICE_STATS, resolve_stats
from gradhealth.optim.monitoring import (
    C_LAST_NONFINITE,
    C_NONFINITE,
    C_STEPS,
    DEFAULT_BUFFER_STEPS,
    DEFAULT_HISTOGRAM_BUCKETS,
    MonitoringOptimizer,
)
from gradhealth.report.monitor_plots import plot_monitor

__all__ = ["DEFAULT_PULL_SECONDS", "FIT_CACHE_SIZE", "HISTORY_COLUMNS", "RECORD_WAIT_SECONDS",
           "GradientHealthMonitor", "GradientHealthWarning"]

ON_NONFINITE: tuple[str, ...] = ("skip", "stop", "warn")
ON_EXPLOSION: tuple[str, ...] = ("warn", "stop", "clip")
EXPLOSION_KINDS: tuple[str, ...] = ("threshold", "growth", "spike")
HISTORY_COLUMNS: tuple[str, ...] = ("step", "epoch", "batch", "loss", "layer", "variable", "path",
                                    *STAT_COLUMNS, "connected", "global_norm", "skipped",
                                    "status")

DEFAULT_PULL_SECONDS: float = 5.0
"""Pull the device ring at least this often (seconds) while logged steps are pending, so a slow
run's alerts arrive within seconds even before ``buffer_steps`` logged steps have filled it. A
pull costs about a millisecond of host work, so every 5 s it is invisible."""


RECORD_WAIT_SECONDS: float = 60.0
"""How long a pull waits for the batch-end hooks that Keras' worker threads have not run yet
(they wait for the device too, so normally a few milliseconds); after it, the steps not yet
recorded wait for the next pull."""


def _layer_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else path


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
            Per-variable gradient histograms are added (their bucket counts are reduced on
            the device, only when ``log_dir`` is set).
        csv: Path of a CSV log, rewritten at the start of each ``fit`` and appended with whole
            steps at every pull (one write, then fsync), so a killed run leaves a file that
            pandas reads, holding every step pulled before the kill.
        verbose: When truthy, alerts are also printed.
        buffer_steps: Logged steps kept on the device between pulls
            (:data:`gradhealth.optim.monitoring.DEFAULT_BUFFER_STEPS`).
        pull_seconds: Pull at least this often while steps are pending
            (:data:`DEFAULT_PULL_SECONDS`).
        stats: The statistics logged per variable: ``"core"`` (default: ``grad_norm``,
            ``grad_max_abs``, ``nonfinite_count``, ``weight_norm`` and the ``grad_to_weight``
            ratio -- all the detectors, ``status`` and TensorBoard use, from one pass over each
            gradient and weight), ``"all"`` (adds ``grad_mean_abs``, ``grad_std``,
            ``zero_fraction``, ``dead_unit_fraction``) or a list of names from
            :data:`gradhealth.ops.stats.DEVICE_STATS` (``grad_norm`` and ``nonfinite_count``
            are always computed). History columns not computed are NaN.

    Statistics are accumulated on the device and pulled every ``buffer_steps`` logged steps,
    every ``pull_seconds``, at the end of each epoch and when ``history`` is read. A crash
    (``kill -9``) loses the logged steps not yet pulled: at most ``buffer_steps`` logged steps
    or ``pull_seconds`` of training. ``on_nonfinite="stop"`` reads the three step counters
    every step and ``on_explosion="stop"`` pulls every logged step, so that training stops right
    after the step that fired.

    The monitored train step is traced (TensorFlow) or compiled (JAX) at the start of the
    first monitored ``fit`` of a model; later ``fit`` calls of that model, compiled the same
    way, with a monitor of the same settings reuse it (:data:`FIT_CACHE_SIZE` settings per
    model), and after each ``fit`` the model gets its own train function back, untouched.

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
                 verbose: bool = False, buffer_steps: int = DEFAULT_BUFFER_STEPS,
                 pull_seconds: float = DEFAULT_PULL_SECONDS,
                 stats: str | Iterable[str] = "core") -> None:
        super().__init__()
        self.stats = resolve_stats(stats)
        self.every = check_positive_int("every", every)
        self.buffer_steps = check_positive_int("buffer_steps", buffer_steps)
        self.pull_seconds = check_positive_float("pull_seconds", pull_seconds)
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
        self._fit_key: tuple[Any, tuple[Any, ...]] | None = None   # see _fit_key()
        self._plain_train_function: Any = None   # the model's own, put back after fit
        self._writer: Any = None
        self._steps_per_execution = 1   # the model's, read in set_model
        # on_train_batch_end may run in Keras' worker threads; the training thread waits on
        # this for them before it pulls.
        self._recorded = threading.Condition()
        self._reset_state()

    # -- state --------------------------------------------------------------------------------
    @property
    def _pull_block(self) -> int:
        """Pending logged steps that trigger a pull (1 when a stop policy needs every step)."""
        return 1 if self.on_explosion == "stop" else self.buffer_steps

    def _reset_state(self) -> None:
        self._blocks: list[dict[str, Any]] = []
        self._frames: list[pd.DataFrame] = []
        self._pending: list[tuple[int, int, int, float]] = []
        self._last_pull = time.monotonic()
        self._frame: pd.DataFrame | None = None
        self.alerts: list[Alert] = []
        self.skipped_steps: list[int] = []
        self.stopped_at: int | None = None
        self._steps_recorded = 0   # steps whose on_train_batch_end has run
        self._pulled_to = 0        # every logged step before this one has been pulled
        self._epoch = 0
        self._epoch_first_step = 0
        self._fit_thread: int | None = None   # the thread running fit (None: hooks by hand)
        self._seen_nonfinite = 0
        self.detector.reset()

    @property
    def history(self) -> pd.DataFrame:
        """Tidy DataFrame, one row per (logged step, trainable variable), columns
        :data:`HISTORY_COLUMNS`; ``status`` is ``ok``, ``vanishing``, ``exploding`` or
        ``nonfinite``. Reading it pulls the steps still on the device."""
        if self._pending and self._optimizer is not None:
            self._pull()
        if self._frame is None:
            self._frames.extend(self._block_frame(b) for b in self._blocks)
            self._blocks = []
            self._frame = (pd.concat(self._frames, ignore_index=True) if self._frames
                           else pd.DataFrame(columns=list(HISTORY_COLUMNS)))
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
            clip_norm=self.max_norm if self.on_explosion == "clip" else None,
            buffer_steps=self._ring_steps, histogram_buckets=self._histogram_buckets,
            stats=self.stats)

    @property
    def _histogram_buckets(self) -> int:
        return DEFAULT_HISTOGRAM_BUCKETS if self.log_dir is not None else 0

    @property
    def _ring_steps(self) -> int:
        """Logged steps the device ring holds: ``buffer_steps``, plus room for the logged steps
        of one call of the train function beyond the first (``steps_per_execution > 1``): the
        pull comes between calls, when ``buffer_steps`` logged steps may already wait."""
        return self.buffer_steps - 1 + -(-self._steps_per_execution // self.every)

    def _wrapper_settings(self) -> tuple[Any, ...]:
        return (self.every, self.on_nonfinite != "warn",
                self.max_norm if self.on_explosion == "clip" else None, self._ring_steps,
                self._histogram_buckets,
                # The wrapper adds grad_max_abs when it keeps histograms (their range).
                resolve_stats([*self.stats, "grad_max_abs"]) if self._histogram_buckets
                else self.stats)

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
        self._steps_per_execution = max(int(getattr(model, "steps_per_execution", 1) or 1), 1)
        if optimizer is not self._optimizer:
            wrapper = optimizer if isinstance(optimizer, MonitoringOptimizer) else None
            reused = None
            self._fit_key = None
            if wrapper is None:
                self._fit_key = _fit_key(model, optimizer, self._wrapper_settings())
                reused = _fit_cache(model).get(self._fit_key)
            if reused is not None:
                wrapper = reused[0]
            elif wrapper is None or (wrapper.every, wrapper.skip_nonfinite, wrapper.clip_norm,
                                     wrapper.buffer_steps, wrapper.histogram_buckets,
                                     wrapper.stats) != self._wrapper_settings():
                wrapper = self.wrap(optimizer)
            if not wrapper.built and model.built:
                # Create the variables now: a tf.function that creates variables while tracing
                # is traced twice.
                wrapper.build(model.trainable_variables)
            self._plain_train_function = model.train_function
            model.optimizer = wrapper
            self._optimizer = wrapper
            if reused is not None:
                model.train_function = reused[1]
            else:
                model.train_function = _new_train_function(model)

    def _uninstall(self) -> None:
        model, wrapper = getattr(self, "_model", None), self._optimizer
        if model is not None and wrapper is not None and model.optimizer is wrapper:
            if self._fit_key is not None and model.train_function is not None:
                _fit_cache(model).put(self._fit_key, (wrapper, model.train_function))
            model.optimizer = wrapper.inner_optimizer
            if self._plain_train_function is not None:
                model.train_function = self._plain_train_function
            else:
                model.make_train_function(force=True)
        self._optimizer = None
        self._plain_train_function = None

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
        self._fit_thread = threading.get_ident()
        if self.csv is not None:
            atomic_write_text(self.csv, ",".join(HISTORY_COLUMNS) + "\n")
        if self.log_dir is not None:
            self._writer = tensorboard.create_writer(self.log_dir)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = int(epoch)
        with self._recorded:  # Keras has run every batch-end hook of the last epoch by now
            self._epoch_first_step = self._steps_recorded

    @property
    def async_safe(self) -> bool:
        """True unless a stop policy is set: ``fit`` may then run :meth:`on_train_batch_end`
        in a worker thread (Keras does, on JAX and torch, when every callback allows it).

        Keras turns a step's logs into Python floats before calling ``on_train_batch_end``: in
        the training loop for a callback that is not async-safe, which makes every step wait
        for the device before the next one is dispatched. Here that hook only records the
        step and its loss; the device ring is read in :meth:`on_train_batch_begin` (on the
        training thread, before the next step takes the state) or at the end of the epoch. A
        stop policy must read the device right after the step, so it keeps the wait.
        """
        return self.on_nonfinite != "stop" and self.on_explosion != "stop"

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._maybe_pull(self._epoch_first_step + int(batch))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss", math.nan)
        loss = float(loss) if loss is not None else math.nan
        # One call of the train function ran the steps of its block (steps_per_execution,
        # blocks aligned on multiples of it, the epoch's last one shorter); ``batch`` is the
        # last. Numbered by the batch: calls may come from worker threads, out of order.
        first = int(batch) - int(batch) % self._steps_per_execution
        with self._recorded:
            for b in range(first, int(batch) + 1):
                step = self._epoch_first_step + b
                if step % self.every == 0:
                    # The logs are the block's last step's: the others have no loss.
                    self._pending.append((step, self._epoch, b,
                                          loss if b == int(batch) else math.nan))
            self._steps_recorded += int(batch) + 1 - first
            self._recorded.notify_all()
        if self._fit_thread not in (None, threading.get_ident()):
            return  # a worker thread: the training thread reads the device
        if self.on_nonfinite == "stop":
            # Stopping right after the bad step needs its flag now: 3 numbers every step.
            counters = self._read(self._optimizer.counters)
            if int(counters[C_NONFINITE]) > self._seen_nonfinite:
                self._pull(counters)
                return
        self._maybe_pull(self._epoch_first_step + int(batch) + 1)

    def _maybe_pull(self, dispatched: int) -> None:
        """Pull once ``_pull_block`` logged steps (or ``pull_seconds``) have gone to the device
        unread: ``dispatched`` steps have been handed to it. Counted by the steps dispatched,
        not by those recorded, so the ring cannot wrap over steps whose hooks lag behind in
        worker threads; the pull waits for those hooks first (the device has to finish the
        steps before the ring can be read anyway)."""
        every = self.every
        unread = -(-dispatched // every) - -(-self._pulled_to // every)
        if unread <= 0 or (unread < self._pull_block
                           and time.monotonic() - self._last_pull < self.pull_seconds):
            return
        with self._recorded:
            self._recorded.wait_for(lambda: self._steps_recorded >= dispatched,
                                    timeout=RECORD_WAIT_SECONDS)
        self._pull()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._optimizer is not None and self._optimizer.built:
            self._pull(last=True)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._optimizer is not None and self._optimizer.built:
            self._pull(last=True)
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
        self._uninstall()

    # -- work -----------------------------------------------------------------------------------
    def _pull(self, counters: np.ndarray | None = None, last: bool = False) -> None:
        """Pull the device ring (one copy of a few kB) and process every pending logged step,
        in step order: history, non-finite alerts, explosion detectors, CSV and TensorBoard.

        ``last``: the epoch is over (Keras has run every batch-end hook). Keras reports an
        epoch's last block of ``steps_per_execution`` steps as whole even when the data ran out
        within it, so the steps are counted again from the device, and steps that never ran
        are dropped.
        """
        wrapper = self._optimizer
        self._last_pull = time.monotonic()
        if wrapper is None or not wrapper.built:
            return
        if counters is None:
            counters = self._read(wrapper.counters)
        ran = int(counters[C_STEPS])
        with self._recorded:
            pending = sorted(self._pending)
            # Steps the device has not run: kept for a later pull, or, once the epoch is over,
            # dropped (they never ran).
            self._pending = [] if last else [p for p in pending if p[0] >= ran]
            pending = [p for p in pending if p[0] < ran]
            self._pulled_to = max(self._pulled_to, self._steps_recorded)
            if last:
                self._steps_recorded = self._pulled_to = ran
        block = None
        if pending:
            ring = self._read(wrapper.ring)
            slots = {int(s): i for i, s in enumerate(self._read(wrapper.ring_steps)) if s >= 0}
            kept = [p for p in pending if p[0] in slots]
            if len(kept) < len(pending):
                warnings.warn(f"{len(pending) - len(kept)} logged steps were overwritten on the "
                              "device before they were read (buffer_steps too small for "
                              "this run's pulls); they are missing from the history.",
                              GradientHealthWarning, stacklevel=2)
            if kept:
                idx = [slots[p[0]] for p in kept]
                hist = (self._read(wrapper.hist_ring)[idx]
                        if wrapper.hist_ring is not None else None)
                block = self._make_block(kept, ring[idx].astype(np.float64), hist)
        bad_logged = self._check_nonfinite(counters, block)
        if block is not None:
            self._run_detectors(block, bad_logged)
            self._blocks.append(block)
            self._frame = None
            if self.csv is not None:
                self._append_csv(block)
            if self._writer is not None:
                self._write_tensorboard(block)

    def _make_block(self, pending: list[tuple[int, int, int, float]], stats: np.ndarray,
                    hist: np.ndarray | None) -> dict[str, Any]:
        """The history rows of ``k`` logged steps as arrays (``stats``: ``(k, n, 8)``)."""
        wrapper = self._optimizer
        paths = wrapper.monitored_paths
        k, n = len(pending), len(paths)
        stats = stats[:, :n]
        col = {name: stats[:, :, i] for i, name in enumerate(DEVICE_STATS)}
        gn, wn, nf = col["grad_norm"], col["weight_norm"], col["nonfinite_count"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(wn > 0, gn / np.where(wn > 0, wn, 1.0), np.nan)
        connected = np.asarray(wrapper.connected if wrapper.connected else [True] * n, bool)
        step_bad = (nf > 0).any(axis=1)
        status = np.full((k, n), "ok", dtype=object)
        status[connected[None, :] & (gn < Thresholds().vanishing_norm)] = "vanishing"
        status[gn > self.max_norm] = "exploding"
        status[nf > 0] = "nonfinite"
        sq = np.where(np.isfinite(gn), gn, 0.0) ** 2
        # A step whose gradients hold NaN/inf has no meaningful global norm: NaN (the
        # per-variable norms still describe the finite entries, as tensor_stats does).
        gnorm = np.where(step_bad, np.nan, np.sqrt(sq.sum(axis=1)))
        layers = self._layers
        layer_norms = {name: np.sqrt(sq[:, idx].sum(axis=1)) for name, idx in layers.items()}
        meta = np.array([p[:3] for p in pending], dtype=np.int64).reshape(k, 3)
        return {"paths": list(paths), "steps": meta[:, 0], "epochs": meta[:, 1], "batches": meta[:, 2],
                "losses": np.array([p[3] for p in pending], dtype=np.float64),
                "stats": col, "ratio": ratio, "status": status, "connected": connected,
                "global_norm": gnorm, "step_bad": step_bad,
                "skipped": step_bad & wrapper._skips(), "layer_norms": layer_norms,
                "hist": hist}

    @property
    def _layers(self) -> dict[str, list[int]]:
        layers: dict[str, list[int]] = {}
        for i, path in enumerate(self._optimizer.monitored_paths):
            layers.setdefault(_layer_of(path), []).append(i)
        return layers

    def _check_nonfinite(self, counters: np.ndarray, block: dict[str, Any] | None) -> list[int]:
        """Alerts for the non-finite steps since the last pull; returns the logged ones."""
        wrapper = self._optimizer
        total = int(counters[C_NONFINITE])
        new = total - self._seen_nonfinite
        if new <= 0:
            return []
        self._seen_nonfinite = total
        bad = [int(s) for s in block["steps"][block["step_bad"]]] if block is not None else []
        last = int(counters[C_LAST_NONFINITE])
        unlogged = new - len(bad)
        steps = sorted(set(bad) | ({last} if unlogged > 0 else set()))
        if wrapper._skips():
            self.skipped_steps.extend(steps)
        if wrapper.loss_scaled:
            return bad  # overflow steps are handled by the LossScaleOptimizer (see module notes)
        action = {"skip": "update skipped", "stop": "update skipped; stopping",
                  "warn": "update APPLIED (on_nonfinite='warn')"}[self.on_nonfinite]
        for step in steps:
            extra = ""
            if step == last and unlogged > 1:
                extra = f" ({unlogged} such steps between logged steps, the last shown)"
            self._alert(Alert(step, "nonfinite", GLOBAL, math.nan, math.nan, float(new),
                              f"step {step}: non-finite gradients{extra}; {action}"),
                        warn=self.on_nonfinite != "skip")
        if self.on_nonfinite == "stop" and self._model is not None:
            self._model.stop_training = True
            if self.stopped_at is None:
                self.stopped_at = steps[0]
        return bad

    def _alert(self, alert: Alert, warn: bool) -> None:
        self.alerts.append(alert)
        if warn:
            warnings.warn(alert.message, GradientHealthWarning, stacklevel=4)
        if self.verbose:
            print(f"[gradhealth] {alert.message}")

    def _run_detectors(self, block: dict[str, Any], bad_logged: list[int]) -> None:
        """The explosion detectors over the block's steps, in step order."""
        names = list(block["layer_norms"])
        norms = np.stack([block["layer_norms"][k] for k in names], axis=1) if names else None
        for i, step in enumerate(block["steps"]):
            step = int(step)
            layer_norms = dict(zip(names, norms[i].tolist(), strict=True)) if names else {}
            for alert in self.detector.update(step, layer_norms,
                                              global_norm=float(block["global_norm"][i])):
                if alert.kind == "nonfinite":
                    continue  # reported from the device counters instead
                self._alert(alert, warn=True)
                if self.on_explosion == "stop" and alert.kind in EXPLOSION_KINDS:
                    self._model.stop_training = True
                    if self.stopped_at is None:
                        self.stopped_at = step

    def _block_frame(self, block: dict[str, Any]) -> pd.DataFrame:
        paths = block["paths"]
        k, n = len(block["steps"]), len(paths)
        rep = lambda a: np.repeat(np.asarray(a), n)  # noqa: E731
        tile = lambda a: np.tile(np.asarray(a, dtype=object), k)  # noqa: E731
        st = block["stats"]
        data: dict[str, Any] = {
            "step": rep(block["steps"]), "epoch": rep(block["epochs"]),
            "batch": rep(block["batches"]), "loss": rep(block["losses"]),
            "layer": tile([_layer_of(p) for p in paths]),
            "variable": tile([p.rsplit("/", 1)[-1] for p in paths]), "path": tile(paths)}
        for c in STAT_COLUMNS:
            if c == "grad_to_weight":
                data[c] = block["ratio"].reshape(-1)
            elif c == "nonfinite_count":
                data[c] = np.rint(st[c]).astype(np.int64).reshape(-1)
            else:
                data[c] = st[c].reshape(-1)
        data["connected"] = np.tile(block["connected"], k)
        data["global_norm"] = rep(block["global_norm"])
        data["skipped"] = rep(block["skipped"])
        data["status"] = block["status"].reshape(-1)
        return pd.DataFrame(data, columns=list(HISTORY_COLUMNS))

    def _append_csv(self, block: dict[str, Any]) -> None:
        text = self._block_frame(block).to_csv(header=False, index=False)
        # Whole steps in one write on an O_APPEND descriptor, then fsync: a run killed at any
        # moment leaves only complete rows of complete steps.
        fd = os.open(self.csv, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_tensorboard(self, block: dict[str, Any]) -> None:
        paths = block["paths"]
        kernels = [i for i, p in enumerate(paths) if p.rsplit("/", 1)[-1] == "kernel"]
        for i, step in enumerate(block["steps"]):
            scalars = {"gradients/global_norm": float(block["global_norm"][i]),
                       "loss": float(block["losses"][i])}
            scalars.update({f"grad_norm/{k}": float(v[i])
                            for k, v in block["layer_norms"].items()})
            scalars.update({f"grad_to_weight/{_layer_of(paths[j])}": float(block["ratio"][i, j])
                            for j in kernels})
            tensorboard.write_scalars(self._writer, int(step), scalars, flush=False)
            if block["hist"] is not None:
                m = block["stats"]["grad_max_abs"][i]
                tensorboard.write_histogram_counts(
                    self._writer, int(step),
                    {f"grad_hist/{p}": (-m[j], m[j], block["hist"][i, j])
                     for j, p in enumerate(paths)}, flush=False)
        self._writer.flush()

    # -- figures ------------------------------------------------------------------------------
    def plot(self, kind: str = "both") -> Any:
        """Figures of the history: ``"norms"`` (norm per layer over steps), ``"heatmap"``
        (layer x step) or ``"both"``; see :mod:`gradhealth.report.monitor_plots`."""
        return plot_monitor(self.history, alerts=self.alerts, kind=kind)


_NOTHING = object()


def _new_train_function(model: keras.Model) -> Any:
    """``model.make_train_function(force=True)``, compiled from a step no other function shares.

    ``jax.jit`` keeps its traces by function, and Keras jits the bound method
    ``model.train_step`` every time: equal bound methods, so a monitored step whose wrapper
    differs from an earlier one only in Python settings (``every``, clipping) -- the same
    variables, the same shapes -- was served the earlier trace. On JAX the step is therefore a
    closure made here, a function no earlier trace belongs to. (TensorFlow's ``tf.function``
    and torch keep no such shared cache.)
    """
    if keras.backend.backend() != "jax":
        model.make_train_function(force=True)
        return model.train_function
    own, step = model.__dict__.get("train_step", _NOTHING), model.train_step

    def train_step(*args: Any, **kwargs: Any) -> Any:
        return step(*args, **kwargs)

    # Not through Layer.__setattr__: a function is nothing for Keras to track.
    object.__setattr__(model, "train_step", train_step)
    try:
        model.make_train_function(force=True)
    finally:
        if own is _NOTHING:
            object.__delattr__(model, "train_step")
        else:
            object.__setattr__(model, "train_step", own)
    return model.train_function


FIT_CACHE_SIZE: int = 4
"""Monitored train functions kept per model (least recently used dropped first)."""


class _FitCache:
    """A model's monitored train functions, kept between ``fit`` calls.

    Installing the monitoring optimizer changes the train step, which TensorFlow traces and JAX
    compiles again: for a 20x256 MLP on 2 CPU cores, 6-8 s at the start of every monitored
    ``fit``. Kept here (with the wrapper whose variables the step uses), a later ``fit`` of the
    same model, compiled the same way, with a monitor of the same settings reuses them; the
    user's own train function is put back after each monitored ``fit``, so an unmonitored
    ``fit`` after a monitored one is not traced again either.
    """

    def __init__(self) -> None:
        # settings -> (what the function depends on, wrapper, train function); oldest first
        self.entries: dict[Any, tuple[tuple[Any, ...], Any, Any]] = {}

    def get(self, key: tuple[Any, tuple[Any, ...]]) -> tuple[Any, Any] | None:
        settings, depends = key
        entry = self.entries.pop(settings, None)
        if entry is None or len(entry[0]) != len(depends) or any(
                a is not b for a, b in zip(entry[0], depends, strict=True)):
            return None   # a stale entry (recompiled, another optimizer) is dropped
        self.entries[settings] = entry  # most recently used last
        return entry[1], entry[2]

    def put(self, key: tuple[Any, tuple[Any, ...]], value: tuple[Any, Any]) -> None:
        settings, depends = key
        self.entries.pop(settings, None)
        self.entries[settings] = (depends, *value)
        while len(self.entries) > FIT_CACHE_SIZE:
            self.entries.pop(next(iter(self.entries)))


def _fit_cache(model: keras.Model) -> _FitCache:
    cache = model.__dict__.get("_gradhealth_fit_cache")
    if cache is None:
        cache = _FitCache()
        # Not through Layer.__setattr__: the cache is no state of the model's to track or save.
        object.__setattr__(model, "_gradhealth_fit_cache", cache)
    return cache


def _fit_key(model: keras.Model, optimizer: Any, settings: tuple[Any, ...]
             ) -> tuple[Any, tuple[Any, ...]]:
    """``(settings, depends)``: the monitor's settings, and what a monitored train function
    depends on, compared by identity: the user's optimizer, the ``compile`` call (its loss,
    metrics and options) and the trainable variables."""
    return settings, (optimizer, getattr(model, "_compile_config", None),
                      *model.trainable_variables)

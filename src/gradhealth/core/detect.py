"""Gradient-explosion detectors: small, stateful, pure NumPy.

Each detector watches one series of gradient norms (the global norm, or one layer's norm), fed
one value per (logged) training step with :meth:`Detector.update`. When its condition starts to
hold it returns an :class:`Alert` holding the step, the layer, the numbers that triggered it and
a readable message; it stays quiet while the condition keeps holding and re-arms on the first
step where it no longer does, so a run that stays exploded gives one alert per episode, not one
per step.

Four conditions, cheapest first:

* :class:`ThresholdDetector` -- the norm exceeds an absolute limit.
* :class:`GrowthDetector` -- the norm grew by a factor over a window of steps (exponential
  growth is the signature of an explosion: the gradient is a product of per-layer Jacobians,
  and once their gains exceed 1 the product grows geometrically; Pascanu et al. 2013).
* :class:`SpikeDetector` -- the norm jumps far above its running (EMA) mean, in units of its
  running standard deviation (a z-score on ``log10(norm)``).
* :class:`NonFiniteDetector` -- the norm is NaN or infinite (the explosion already happened).

:class:`ExplosionDetector` runs all four on the global norm and on every layer's norm.

References:
    Pascanu, Mikolov & Bengio (2013). On the difficulty of training recurrent neural networks.
    ICML. https://arxiv.org/abs/1211.5063
    Finch (2009). Incremental calculation of weighted mean and variance. University of
    Cambridge Computing Service. (The EMA mean/variance recurrence used by SpikeDetector.)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from gradhealth._internal.validation import check_positive_float, check_positive_int
from gradhealth.core.thresholds import Thresholds

__all__ = ["DEFAULT_EMA_ALPHA", "DEFAULT_GROWTH_FACTOR", "DEFAULT_GROWTH_WINDOW",
           "DEFAULT_MAX_NORM", "DEFAULT_MIN_NORM", "DEFAULT_MIN_STD", "DEFAULT_WARMUP",
           "DEFAULT_Z_THRESHOLD", "GLOBAL", "KINDS", "Alert", "Detector", "ExplosionDetector",
           "ExplosionError", "GrowthDetector", "NonFiniteDetector", "SpikeDetector",
           "ThresholdDetector"]

GLOBAL = "(global)"
"""Layer name used for alerts about the global gradient norm (all variables together)."""

DEFAULT_MAX_NORM: float = Thresholds().exploding_norm
"""Absolute alarm level for a gradient norm: ``Thresholds.exploding_norm`` (1e3), i.e. 100x the
largest clipping threshold used in practice (Pascanu et al. 2013 clip at 1-10)."""

DEFAULT_GROWTH_FACTOR: float = 10.0
"""A norm that grows tenfold ...  (see :data:`DEFAULT_GROWTH_WINDOW`)."""

DEFAULT_GROWTH_WINDOW: int = 5
"""... within five steps is growing geometrically at >= 10**(1/5) ~ 1.58x per step. Step-to-step
changes of a healthy run are fluctuations around a slowly drifting level (a factor of a few at
most); sustained 58%-per-step growth is the exponential regime of an explosion, and at that rate
a norm of 1e3 still needs ~170 steps to overflow float32 (3.4e38), so the alert comes early."""

DEFAULT_MIN_NORM: float = 1.0
"""Growth and spikes are only reported once the norm reaches 1.0: practical clipping thresholds
are 0.1-10 (Pascanu et al. 2013 use 1-10), so relative jumps of norms below 1 -- common early
in training and in vanishing layers -- cannot yet produce a destructive update."""

DEFAULT_Z_THRESHOLD: float = 6.0
"""Spike alarm at 6 running standard deviations of ``log10(norm)``. For Gaussian fluctuations
a 6-sigma excursion has probability ~1e-9 per step, so false alarms are negligible over any
realistic run, while a genuine spike (an order of magnitude in one step) sits far beyond it
once the running deviation has settled."""

DEFAULT_EMA_ALPHA: float = 0.1
"""EMA weight of the newest value: an effective memory of ~1/alpha = 10 steps, short enough to
follow the slow drift of gradient norms during training and long enough to average noise."""

DEFAULT_WARMUP: int = 10
"""The spike detector is silent for its first 10 values (= 1/alpha, one EMA memory length),
while the running mean and deviation are still dominated by their initial values."""

DEFAULT_MIN_STD: float = 0.05
"""Floor on the running standard deviation of ``log10(norm)`` (0.05 decades ~ 12%), so a norm
that has been almost constant does not turn a harmless 20% change into a huge z-score."""

KINDS: tuple[str, ...] = ("nonfinite", "threshold", "growth", "spike")


@dataclass(frozen=True)
class Alert:
    """One early-warning event.

    Attributes:
        step: The training step (as given to ``update``) at which the condition started.
        kind: ``"nonfinite"``, ``"threshold"``, ``"growth"`` or ``"spike"``.
        layer: The layer (or :data:`GLOBAL`) whose norm triggered the alert.
        value: The norm (or statistic) observed at ``step``.
        threshold: The limit it crossed (for growth: the factor; for spike: the z limit).
        reference: The comparison value: the norm ``window`` steps earlier (growth), the
            z-score (spike), NaN otherwise.
        message: A readable sentence with all of the above.
    """

    step: int
    kind: str
    layer: str
    value: float
    threshold: float
    reference: float
    message: str

    def to_dict(self) -> dict[str, object]:
        """The alert as a plain dict (one row of a DataFrame, JSON-serializable)."""
        return asdict(self)

    def __str__(self) -> str:
        return self.message


class ExplosionError(RuntimeError):
    """Raised by :class:`ExplosionDetector` with ``raise_on_alert=True``; holds ``.alert``."""

    def __init__(self, alert: Alert) -> None:
        super().__init__(alert.message)
        self.alert = alert


class Detector:
    """Base class: one condition over one series of norms, with re-arming.

    Subclasses implement :meth:`_check`, returning ``(fires, threshold, reference)`` for a
    value, and :meth:`_observe` to update their running state after the check.
    """

    kind: str = ""

    def __init__(self, layer: str = GLOBAL) -> None:
        self.layer = str(layer)
        self._active = False

    def reset(self) -> None:
        """Forget everything seen so far (start of a new training run)."""
        self._active = False

    def update(self, step: int, value: float) -> Alert | None:
        """Feed the norm of one step; return an :class:`Alert` when the condition starts.

        Args:
            step: The training step the value belongs to.
            value: The gradient norm at that step (any float, NaN and inf included).

        Returns:
            An :class:`Alert` on the first step of an episode, else None.
        """
        value = float(value)
        result = self._check(value)
        self._observe(value)
        if result is None:
            self._active = False
            return None
        threshold, reference = result
        if self._active:
            return None
        self._active = True
        return Alert(int(step), self.kind, self.layer, value, threshold, reference,
                     self._message(int(step), value, threshold, reference))

    def _check(self, value: float) -> tuple[float, float] | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _observe(self, value: float) -> None:
        """Update running state after the check (no-op by default)."""

    def _message(self, step: int, value: float, threshold: float, reference: float) -> str:
        raise NotImplementedError  # pragma: no cover - abstract


class NonFiniteDetector(Detector):
    """Alerts when the norm is NaN or infinite: the update would poison the weights.

    Example:
        >>> d = NonFiniteDetector()
        >>> d.update(0, 1.0) is None, d.update(1, float("nan")).kind
        (True, 'nonfinite')
    """

    kind = "nonfinite"

    def _check(self, value: float) -> tuple[float, float] | None:
        return None if math.isfinite(value) else (math.nan, math.nan)

    def _message(self, step: int, value: float, threshold: float, reference: float) -> str:
        return f"step {step}: non-finite gradient norm ({value}) in {self.layer}"


class ThresholdDetector(Detector):
    """Alerts when the norm exceeds ``max_norm``.

    Args:
        max_norm: The absolute limit (default :data:`DEFAULT_MAX_NORM`).
        layer: The series' name, copied into alerts.

    Example:
        >>> ThresholdDetector(max_norm=10).update(3, 12.0).message
        'step 3: gradient norm 12 in (global) exceeds 10'
    """

    kind = "threshold"

    def __init__(self, max_norm: float = DEFAULT_MAX_NORM, layer: str = GLOBAL) -> None:
        super().__init__(layer)
        self.max_norm = check_positive_float("max_norm", max_norm)

    def _check(self, value: float) -> tuple[float, float] | None:
        if math.isfinite(value) and value > self.max_norm:
            return self.max_norm, math.nan
        return None

    def _message(self, step: int, value: float, threshold: float, reference: float) -> str:
        return f"step {step}: gradient norm {value:.4g} in {self.layer} exceeds {threshold:.4g}"


class GrowthDetector(Detector):
    """Alerts when the norm grew by at least ``factor`` over the last ``window`` values.

    Args:
        factor: Growth factor that counts as explosive (default :data:`DEFAULT_GROWTH_FACTOR`).
        window: Number of updates the growth is measured over (default
            :data:`DEFAULT_GROWTH_WINDOW`). With a monitor logging every ``k`` steps the window
            spans ``k * window`` training steps.
        min_norm: Only norms at least this large can trigger (default :data:`DEFAULT_MIN_NORM`).
        layer: The series' name, copied into alerts.

    Example:
        >>> d = GrowthDetector(factor=10, window=2, min_norm=1)
        >>> [d.update(s, v) is not None for s, v in enumerate([1, 2, 4, 20])]
        [False, False, False, True]
    """

    kind = "growth"

    def __init__(self, factor: float = DEFAULT_GROWTH_FACTOR, window: int = DEFAULT_GROWTH_WINDOW,
                 min_norm: float = DEFAULT_MIN_NORM, layer: str = GLOBAL) -> None:
        super().__init__(layer)
        self.factor = check_positive_float("factor", factor)
        if self.factor <= 1:
            raise ValueError(f"Argument `factor` must be above 1. Received: factor={factor!r}")
        self.window = check_positive_int("window", window)
        self.min_norm = check_positive_float("min_norm", min_norm)
        self._values: deque[float] = deque(maxlen=self.window + 1)

    def reset(self) -> None:
        super().reset()
        self._values.clear()

    def _check(self, value: float) -> tuple[float, float] | None:
        if not math.isfinite(value) or len(self._values) < self.window or value < self.min_norm:
            return None
        old = self._values[-self.window]
        if old > 0 and value / old >= self.factor:
            return self.factor, old
        return None

    def _observe(self, value: float) -> None:
        if math.isfinite(value):
            self._values.append(value)

    def _message(self, step: int, value: float, threshold: float, reference: float) -> str:
        per_step = (value / reference) ** (1.0 / self.window)
        return (f"step {step}: gradient norm in {self.layer} grew {value / reference:.3g}x in "
                f"{self.window} steps ({reference:.4g} -> {value:.4g}, {per_step:.3g}x per step)")


class SpikeDetector(Detector):
    """Alerts when ``log10(norm)`` lies ``z_threshold`` running deviations above its EMA.

    The mean and variance are exponentially weighted (Finch 2009):
    ``d = x - mean; mean += alpha * d; var = (1 - alpha) * (var + alpha * d**2)``, updated with
    every finite value after it has been checked.

    Args:
        z_threshold: Alarm level in running standard deviations (default
            :data:`DEFAULT_Z_THRESHOLD`).
        alpha: EMA weight of the newest value, in (0, 1) (default :data:`DEFAULT_EMA_ALPHA`).
        warmup: Number of values seen before the detector may fire (default
            :data:`DEFAULT_WARMUP`).
        min_norm: Only norms at least this large can trigger (default :data:`DEFAULT_MIN_NORM`).
        min_std: Floor on the running deviation, in decades (default :data:`DEFAULT_MIN_STD`).
        layer: The series' name, copied into alerts.

    Example:
        >>> d = SpikeDetector(warmup=3)
        >>> [d.update(s, v) is not None for s, v in enumerate([2, 2.1, 1.9, 2, 200])]
        [False, False, False, False, True]
    """

    kind = "spike"

    def __init__(self, z_threshold: float = DEFAULT_Z_THRESHOLD, alpha: float = DEFAULT_EMA_ALPHA,
                 warmup: int = DEFAULT_WARMUP, min_norm: float = DEFAULT_MIN_NORM,
                 min_std: float = DEFAULT_MIN_STD, layer: str = GLOBAL) -> None:
        super().__init__(layer)
        self.z_threshold = check_positive_float("z_threshold", z_threshold)
        self.alpha = check_positive_float("alpha", alpha)
        if self.alpha >= 1:
            raise ValueError(f"Argument `alpha` must be in (0, 1). Received: alpha={alpha!r}")
        self.warmup = check_positive_int("warmup", warmup)
        self.min_norm = check_positive_float("min_norm", min_norm)
        self.min_std = check_positive_float("min_std", min_std)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.count = 0
        self.mean = 0.0
        self.var = 0.0

    def z_score(self, value: float) -> float:
        """The z-score ``value`` would have against the current running statistics."""
        if self.count == 0 or not (math.isfinite(value) and value > 0):
            return math.nan
        std = max(math.sqrt(self.var), self.min_std)
        return (math.log10(value) - self.mean) / std

    def _check(self, value: float) -> tuple[float, float] | None:
        if self.count < self.warmup or not math.isfinite(value) or value < self.min_norm:
            return None
        z = self.z_score(value)
        return (self.z_threshold, z) if z > self.z_threshold else None

    def _observe(self, value: float) -> None:
        if not (math.isfinite(value) and value > 0):
            return
        x = math.log10(value)
        if self.count == 0:
            self.mean = x
        else:
            d = x - self.mean
            self.mean += self.alpha * d
            self.var = (1 - self.alpha) * (self.var + self.alpha * d * d)
        self.count += 1

    def _message(self, step: int, value: float, threshold: float, reference: float) -> str:
        return (f"step {step}: gradient norm spike in {self.layer}: {value:.4g} is "
                f"{reference:.1f} running std above its running mean "
                f"(~{10 ** self.mean:.4g}; limit {threshold:g})")


class ExplosionDetector:
    """All four detectors on the global norm and, optionally, on every layer's norm.

    Args:
        max_norm: Absolute limit (:class:`ThresholdDetector`).
        growth_factor: Factor for :class:`GrowthDetector`.
        growth_window: Window for :class:`GrowthDetector`.
        z_threshold: Spike limit for :class:`SpikeDetector`.
        alpha: EMA weight for :class:`SpikeDetector`.
        warmup: Warm-up length for :class:`SpikeDetector`.
        min_norm: Smallest norm that may raise growth or spike alerts.
        per_layer: Also watch each layer's norm (alerts name the layer).
        raise_on_alert: Raise :class:`ExplosionError` on the first alert instead of returning it.

    Example:
        >>> det = ExplosionDetector(max_norm=100)
        >>> det.update(0, {"dense": 5.0}, global_norm=5.0)
        []
        >>> [a.kind for a in det.update(1, {"dense": 500.0}, global_norm=500.0)]
        ['threshold', 'threshold']
    """

    def __init__(self, max_norm: float = DEFAULT_MAX_NORM,
                 growth_factor: float = DEFAULT_GROWTH_FACTOR,
                 growth_window: int = DEFAULT_GROWTH_WINDOW,
                 z_threshold: float = DEFAULT_Z_THRESHOLD, alpha: float = DEFAULT_EMA_ALPHA,
                 warmup: int = DEFAULT_WARMUP, min_norm: float = DEFAULT_MIN_NORM,
                 per_layer: bool = True, raise_on_alert: bool = False) -> None:
        self._config = dict(max_norm=max_norm, growth_factor=growth_factor,
                            growth_window=growth_window, z_threshold=z_threshold, alpha=alpha,
                            warmup=warmup, min_norm=min_norm)
        self._make(GLOBAL)  # validates every argument once, here
        self.max_norm = float(max_norm)
        self.per_layer = bool(per_layer)
        self.raise_on_alert = bool(raise_on_alert)
        self.reset()

    def _make(self, layer: str) -> list[Detector]:
        c = self._config
        return [
            NonFiniteDetector(layer),
            ThresholdDetector(c["max_norm"], layer),
            GrowthDetector(c["growth_factor"], c["growth_window"], c["min_norm"], layer),
            SpikeDetector(c["z_threshold"], c["alpha"], c["warmup"], c["min_norm"], layer=layer),
        ]

    def reset(self) -> None:
        """Forget all series and alerts."""
        self._series: dict[str, list[Detector]] = {}
        self.alerts: list[Alert] = []

    def update(self, step: int, norms: Mapping[str, float] | None = None,
               global_norm: float | None = None) -> list[Alert]:
        """Feed one step's norms; return the alerts that started at this step.

        Args:
            step: The training step.
            norms: Per-layer gradient norms (ignored unless ``per_layer``).
            global_norm: The norm of all gradients together.

        Returns:
            The new alerts (also appended to ``self.alerts``), global ones first.

        Raises:
            ExplosionError: With ``raise_on_alert=True``, for the first new alert.
        """
        items: list[tuple[str, float]] = []
        if global_norm is not None:
            items.append((GLOBAL, float(global_norm)))
        if self.per_layer and norms:
            items.extend((str(k), float(v)) for k, v in norms.items())
        new: list[Alert] = []
        for layer, value in items:
            detectors = self._series.get(layer)
            if detectors is None:
                detectors = self._series[layer] = self._make(layer)
            for det in detectors:
                alert = det.update(step, value)
                if alert is not None:
                    new.append(alert)
        self.alerts.extend(new)
        if new and self.raise_on_alert:
            raise ExplosionError(new[0])
        return new

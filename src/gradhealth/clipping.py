"""Gradient clipping: NumPy functions and the Keras optimizer wrapper that clips in ``model.fit``.

Two ways to use it:

* On NumPy lists of gradients (analysis, teaching): :func:`clip_by_value`, :func:`clip_by_norm`,
  :func:`clip_by_global_norm`, :func:`unitwise_norm`, :func:`adaptive_clip` and
  :class:`AutoClip`, re-exported from :mod:`gradhealth.core.clipping`.
* In training, on every Keras backend: wrap the optimizer, then compile as usual::

      opt = gradhealth.clipping.ClippingOptimizer(keras.optimizers.SGD(0.1), method="agc")
      model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
      model.fit(x, y)

  ``method`` is one of ``"value"``, ``"norm"``, ``"global_norm"``, ``"agc"``, ``"autoclip"``.
  Keras itself offers the first three (``clipvalue``, ``clipnorm``, ``global_clipnorm``) but not
  AGC or AutoClip. The wrapper works like Keras' own ``LossScaleOptimizer``: it overrides
  ``apply`` (TensorFlow, torch) and ``stateless_apply`` (JAX) so the clipping runs inside the
  compiled train step, and keeps its state (AutoClip's history) in optimizer variables, which
  JAX's stateless train step carries from step to step.

The device versions compute norms in float32 with max-abs scaling
(``m * sqrt(sum((g / m) ** 2))``), so tiny gradients never underflow to a zero norm.

References:
    Pascanu, Mikolov & Bengio (2013), https://arxiv.org/abs/1211.5063
    Brock, De, Smith & Simonyan (2021), https://arxiv.org/abs/2102.06171
    Seetharaman, Wichern, Pardo & Le Roux (2020), https://arxiv.org/abs/2007.14469
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
from keras import ops

from gradhealth._validation import check_choice, check_positive_float, check_positive_int
from gradhealth.core.clipping import (
    DEFAULT_AGC_CLIP_FACTOR,
    DEFAULT_AGC_EPS,
    DEFAULT_AUTOCLIP_PERCENTILE,
    AutoClip,
    adaptive_clip,
    clip_by_global_norm,
    clip_by_norm,
    clip_by_value,
    global_norm,
    unitwise_norm,
)

__all__ = [
    "AutoClip",
    "ClippingOptimizer",
    "METHODS",
    "adaptive_clip",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "compare_clipping",
    "global_norm",
    "ops_adaptive_clip",
    "ops_clip_by_global_norm",
    "ops_clip_by_norm",
    "ops_clip_by_value",
    "ops_global_norm",
    "ops_norm",
    "ops_unitwise_norm",
    "unitwise_norm",
]

METHODS: tuple[str, ...] = ("value", "norm", "global_norm", "agc", "autoclip")

DEFAULT_AUTOCLIP_HISTORY: int = 10_000
"""On the device AutoClip keeps the last 10,000 global norms (a ring buffer, 40 kB). The
paper's rule uses every norm seen so far; 10,000 steps is longer than most course-scale runs,
and for longer runs the percentile of the most recent 10,000 steps follows the same quantity
while keeping each step's sort cheap."""

_TINY = 1e-30
"""float32 division guard for an all-zero unit's norm: any positive value keeps a zero gradient
zero; 1e-30 is above float32's smallest normal (1.2e-38) so the division is exact."""


# ---------------------------------------------------------------------------------------------
# Device maths (keras.ops, all backends)
# ---------------------------------------------------------------------------------------------
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
    """Device version of :func:`clip_by_value` (``None`` entries pass through)."""
    return [None if g is None else ops.clip(g, -clip_value, clip_value) for g in grads]


def _scale(g: Any, factor: Any) -> Any:
    return ops.cast(ops.cast(g, "float32") * factor, g.dtype)


def ops_clip_by_norm(grads: list[Any], max_norm: float) -> list[Any]:
    """Device version of :func:`clip_by_norm`: each tensor's norm capped at ``max_norm``."""
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
    """Device version of :func:`clip_by_global_norm`: returns ``(clipped, pre-clip norm)``."""
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


def _ops_percentile(values: Any, count: Any, q: float) -> Any:
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


# ---------------------------------------------------------------------------------------------
# Optimizer wrappers
# ---------------------------------------------------------------------------------------------
def resolve_optimizer(optimizer: Any, argument: str = "optimizer") -> keras.optimizers.Optimizer:
    """Accept a Keras optimizer instance or name (``"adam"``); raise a clear error otherwise."""
    if isinstance(optimizer, str):
        try:
            optimizer = keras.optimizers.get(optimizer)
        except ValueError as e:
            raise ValueError(
                f"Argument `{argument}` is not a known Keras optimizer name (e.g. 'adam', 'sgd'). "
                f"Received: {argument}={optimizer!r}"
            ) from e
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"Argument `{argument}` must be a keras.optimizers.Optimizer instance or name. "
            f"Received: {argument}={optimizer!r} (of type {type(optimizer).__name__})"
        )
    return optimizer


class GradientWrapperOptimizer(keras.optimizers.Optimizer):
    """Base class: an optimizer that transforms gradients, then lets another optimizer apply them.

    Built the way Keras' ``LossScaleOptimizer`` wraps an optimizer, so it works inside the
    compiled train step of every backend: ``apply`` (TensorFlow ``tf.function``, torch) and
    ``stateless_apply`` (JAX ``jit``) both call :meth:`transform`, which may read and assign this
    wrapper's own variables (created in :meth:`build_own`). The learning rate, iteration count,
    loss scaling and configuration belong to the inner optimizer.

    Args:
        optimizer: The optimizer that applies the updates (instance or name).
        skip_nonfinite: When True, a step whose gradients hold NaN/inf is not applied at all
            (weights and the inner optimizer's state are left unchanged).
        name: Optimizer name.
    """

    def __init__(self, optimizer: Any, skip_nonfinite: bool = False,
                 name: str | None = None) -> None:
        optimizer = resolve_optimizer(optimizer)
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = optimizer
        self.skip_nonfinite = bool(skip_nonfinite)

    # -- hooks ---------------------------------------------------------------------------------
    def build_own(self, var_list: list[Any]) -> None:
        """Create this wrapper's own variables (none by default)."""

    #: Subclasses that need the "all gradients finite" flag set this, so it is computed once
    #: per step and shared with the skip-on-NaN logic rather than reduced twice.
    needs_finite: bool = False

    def transform(self, grads: list[Any], weights: list[Any], finite: Any = None) -> list[Any]:
        """Return the gradients to apply; may assign this wrapper's variables.

        ``finite`` is the boolean "every gradient entry is finite" tensor when the wrapper
        skips non-finite steps or sets :attr:`needs_finite`, else None.
        """
        return grads

    # -- Keras optimizer API --------------------------------------------------------------------
    def build(self, var_list: list[Any]) -> None:
        self.build_own(list(var_list))
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self) -> list[Any]:
        return self._variables + self.inner_optimizer.variables

    @staticmethod
    def all_finite(grads: list[Any]) -> Any:
        """A boolean scalar tensor: every entry of every (non-None) gradient is finite."""
        flags = [ops.all(ops.isfinite(g)) for g in grads if g is not None]
        return ops.all(ops.stack(flags)) if flags else ops.convert_to_tensor(True)

    def _skips(self) -> bool:
        # A LossScaleOptimizer must see non-finite steps itself (it lowers its scale then).
        return self.skip_nonfinite and not isinstance(
            self.inner_optimizer, keras.optimizers.LossScaleOptimizer)

    def apply(self, grads: list[Any], trainable_variables: list[Any] | None = None) -> None:
        if not self.built:
            self.build(list(trainable_variables))
            self.built = True
        tvs = list(trainable_variables) if trainable_variables is not None else list(
            self._trainable_variables)
        grads = list(grads)
        any_finite = self.all_finite(grads) if (self._skips() or self.needs_finite) else None
        finite = any_finite if self._skips() else None
        new_grads = self.transform(grads, [v.value for v in tvs], any_finite)

        def update() -> None:
            self.inner_optimizer.apply(new_grads, tvs)

        if finite is None:
            update()
        elif keras.backend.backend() == "jax":
            # JAX trains through `stateless_apply`; a stateful `apply` runs eagerly, where a
            # lax.cond would trace `update` and leak tracers into the variables it assigns.
            if bool(finite):
                update()
        else:
            ops.cond(finite, update, lambda: None)

    def stateless_apply(self, optimizer_variables: list[Any], grads: list[Any],
                        trainable_variables: list[Any]) -> tuple[list[Any], list[Any]]:
        if not self.built:
            raise ValueError(
                f"To call `stateless_apply`, {self.__class__.__name__} must be built. "
                "Call `optimizer.build(model.trainable_variables)` first."
            )
        n_own = len(self._variables)
        optimizer_variables = list(optimizer_variables)
        inner_values = optimizer_variables[n_own:]
        grads = list(grads)
        trainable_variables = list(trainable_variables)
        mapping = list(zip(self.variables, optimizer_variables, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            any_finite = (self.all_finite(grads) if (self._skips() or self.needs_finite)
                          else None)
            finite = any_finite if self._skips() else None
            new_grads = self.transform(grads, trainable_variables, any_finite)
        own_values = [scope.get_current_value(v) for v in self._variables]

        def update() -> tuple[list[Any], list[Any]]:
            new_t, new_inner = self.inner_optimizer.stateless_apply(
                inner_values, new_grads, trainable_variables)
            return list(new_t), list(new_inner)

        if finite is None:
            new_t, new_inner = update()
        else:
            new_t, new_inner = ops.cond(finite, update,
                                        lambda: (trainable_variables, inner_values))
        return list(new_t), own_values + list(new_inner)

    @property
    def learning_rate(self) -> Any:
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self) -> Any:
        return self.inner_optimizer.iterations

    def scale_loss(self, loss: Any) -> Any:
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list: list[Any]) -> None:
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name,
                "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
                "skip_nonfinite": self.skip_nonfinite}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None
                    ) -> GradientWrapperOptimizer:
        config = dict(config)
        config["optimizer"] = keras.saving.deserialize_keras_object(
            config["optimizer"], custom_objects=custom_objects)
        return cls(**config)


@keras.saving.register_keras_serializable(package="gradhealth")
class ClippingOptimizer(GradientWrapperOptimizer):
    """Clip gradients inside ``model.fit`` with any of five rules, on every Keras backend.

    Args:
        optimizer: The optimizer that applies the clipped gradients (instance or name).
        method: ``"value"`` (each entry into ``[-clip_value, clip_value]``), ``"norm"``
            (each tensor's norm <= ``max_norm``), ``"global_norm"`` (all tensors together,
            Pascanu et al. 2013), ``"agc"`` (unit-wise, relative to the weights; Brock et al.
            2021) or ``"autoclip"`` (global norm <= a percentile of past norms; Seetharaman
            et al. 2020).
        clip_value: Bound for ``"value"`` (required there).
        max_norm: Limit for ``"norm"`` and ``"global_norm"`` (required there).
        clip_factor: AGC's ratio limit (default 0.01).
        eps: AGC's floor on weight norms (default 1e-3).
        percentile: AutoClip's percentile (default 10).
        history_size: AutoClip's device history length (default
            :data:`DEFAULT_AUTOCLIP_HISTORY`).
        skip_nonfinite: Skip steps with NaN/inf gradients instead of applying them.
        name: Optimizer name.

    Raises:
        ValueError: Unknown method, or a missing/invalid parameter for it.
        TypeError: ``optimizer`` is not an optimizer or optimizer name.

    Example:
        >>> opt = ClippingOptimizer(keras.optimizers.SGD(0.1), method="agc", clip_factor=0.02)
        >>> model.compile(optimizer=opt, loss="mse")
    """

    def __init__(self, optimizer: Any, method: str = "global_norm", *,
                 clip_value: float | None = None, max_norm: float | None = None,
                 clip_factor: float = DEFAULT_AGC_CLIP_FACTOR, eps: float = DEFAULT_AGC_EPS,
                 percentile: float = DEFAULT_AUTOCLIP_PERCENTILE,
                 history_size: int = DEFAULT_AUTOCLIP_HISTORY, skip_nonfinite: bool = False,
                 name: str | None = None) -> None:
        method = check_choice("method", method, METHODS)
        if method == "value":
            if clip_value is None:
                raise ValueError('Argument `clip_value` is required for method="value". '
                                 "Received: clip_value=None")
            clip_value = check_positive_float("clip_value", clip_value)
        if method in ("norm", "global_norm"):
            if max_norm is None:
                raise ValueError(f"Argument `max_norm` is required for method={method!r}. "
                                 "Received: max_norm=None")
            max_norm = check_positive_float("max_norm", max_norm)
        clip_factor = check_positive_float("clip_factor", clip_factor)
        eps = check_positive_float("eps", eps)
        AutoClip(percentile)  # validates the percentile with the NumPy rule's message
        history_size = check_positive_int("history_size", history_size)
        super().__init__(optimizer, skip_nonfinite=skip_nonfinite, name=name)
        self.method = method
        self.clip_value = clip_value
        self.max_norm = max_norm
        self.clip_factor = clip_factor
        self.eps = eps
        self.percentile = float(percentile)
        self.history_size = history_size

    def build_own(self, var_list: list[Any]) -> None:
        if self.method == "autoclip":
            self.autoclip_history = self.add_variable(
                shape=(self.history_size,), dtype="float32",
                initializer=keras.initializers.Zeros(), aggregation="none",
                name="autoclip_history")
            self.autoclip_count = self.add_variable(
                shape=(), dtype="int32", initializer=keras.initializers.Zeros(),
                aggregation="none", name="autoclip_count")
            self.autoclip_threshold = self.add_variable(
                shape=(), dtype="float32", initializer=keras.initializers.Zeros(),
                aggregation="none", name="autoclip_threshold")

    def transform(self, grads: list[Any], weights: list[Any], finite: Any = None) -> list[Any]:
        if self.method == "value":
            return ops_clip_by_value(grads, self.clip_value)
        if self.method == "norm":
            return ops_clip_by_norm(grads, self.max_norm)
        if self.method == "global_norm":
            return ops_clip_by_global_norm(grads, self.max_norm)[0]
        if self.method == "agc":
            return ops_adaptive_clip(grads, weights, self.clip_factor, self.eps)
        return self._autoclip(grads)

    def _autoclip(self, grads: list[Any]) -> list[Any]:
        norm = ops_global_norm(grads)
        finite = ops.isfinite(norm)
        count = ops.convert_to_tensor(self.autoclip_count)
        history = ops.convert_to_tensor(self.autoclip_history)
        slot = ops.mod(count, self.history_size)
        onehot = ops.equal(ops.arange(self.history_size, dtype="int32"), slot)
        new_history = ops.where(ops.logical_and(onehot, finite), norm, history)
        new_count = count + ops.cast(finite, "int32")
        filled = ops.minimum(new_count, self.history_size)
        limit = _ops_percentile(new_history, filled, self.percentile)
        self.autoclip_history.assign(new_history)
        self.autoclip_count.assign(new_count)
        self.autoclip_threshold.assign(limit)
        usable = ops.logical_and(filled > 0, limit > 0)
        safe_limit = ops.where(usable, limit, float("inf"))
        return ops_clip_by_global_norm(grads, safe_limit)[0]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(method=self.method, clip_value=self.clip_value, max_norm=self.max_norm,
                      clip_factor=self.clip_factor, eps=self.eps, percentile=self.percentile,
                      history_size=self.history_size)
        return config


# ---------------------------------------------------------------------------------------------
# Experiment: the same training under several clipping rules
# ---------------------------------------------------------------------------------------------
def compare_clipping(build_model: Callable[[], keras.Model], x: Any, y: Any,
                     make_optimizer: Callable[[], keras.optimizers.Optimizer],
                     loss: Any, methods: Mapping[str, Mapping[str, Any] | None],
                     epochs: int = 1, batch_size: int = 64) -> tuple[Any, Any]:
    """Train the same model from the same weights once per clipping rule and compare.

    Every run gets a fresh model from ``build_model`` (seed it for identical starting weights),
    a fresh optimizer from ``make_optimizer`` wrapped in a :class:`ClippingOptimizer` (or not,
    for a ``None`` entry), and a :class:`gradhealth.GradientHealthMonitor` that watches every
    step without interfering (``on_nonfinite="warn"``: NaN updates are applied, as they would
    be without the monitor).

    Args:
        build_model: Returns a new, uncompiled model.
        x: Training inputs.
        y: Training targets.
        make_optimizer: Returns a new optimizer.
        loss: Keras loss for ``compile``.
        methods: Run name -> ``ClippingOptimizer`` keyword arguments (including ``method``),
            or None for no clipping.
        epochs: Epochs per run.
        batch_size: Batch size (the data are not shuffled, so all runs see the same batches).

    Returns:
        ``(table, norms)``: a DataFrame with one row per run -- ``method``, ``final_loss``
        (last finite-or-not training loss), ``steps_to_nan`` (first step whose loss or
        gradients are not finite; None if none), ``max_grad_norm`` (largest finite pre-clip
        global gradient norm) -- and a DataFrame of the pre-clip global norm per step
        (rows: steps, columns: runs).
    """
    import warnings

    import numpy as np
    import pandas as pd

    from gradhealth.monitor import GradientHealthMonitor, GradientHealthWarning

    rows, norms = [], {}
    for name, kwargs in methods.items():
        model = build_model()
        optimizer = make_optimizer()
        if kwargs is not None:
            optimizer = ClippingOptimizer(optimizer, **dict(kwargs))
        model.compile(optimizer=optimizer, loss=loss)
        monitor = GradientHealthMonitor(on_nonfinite="warn")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GradientHealthWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0,
                      callbacks=[monitor])
        per_step = monitor.history.groupby("step").agg(
            loss=("loss", "first"), global_norm=("global_norm", "first"),
            nonfinite=("nonfinite_count", "sum"))
        bad = per_step.index[~np.isfinite(per_step["loss"]) | (per_step["nonfinite"] > 0)]
        finite_norms = per_step["global_norm"][np.isfinite(per_step["global_norm"])]
        rows.append({"method": name, "final_loss": float(per_step["loss"].iloc[-1]),
                     "steps_to_nan": int(bad.min()) if len(bad) else None,
                     "max_grad_norm": float(finite_norms.max()) if len(finite_norms) else
                     float("nan")})
        norms[name] = per_step["global_norm"]
    return pd.DataFrame(rows), pd.DataFrame(norms)

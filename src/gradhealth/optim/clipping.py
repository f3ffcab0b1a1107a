"""Clip gradients inside ``model.fit``: the Keras optimizer wrapper, every backend.

Wrap the optimizer, then compile as usual::

    opt = gradhealth.ClippingOptimizer(keras.optimizers.SGD(0.1), method="agc")
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    model.fit(x, y)

``method`` is one of ``"value"``, ``"norm"``, ``"global_norm"``, ``"agc"``, ``"autoclip"``.
Keras itself offers the first three (``clipvalue``, ``clipnorm``, ``global_clipnorm``) but not
AGC or AutoClip. The wrapper works like Keras' own ``LossScaleOptimizer``: it overrides
``apply`` (TensorFlow, torch) and ``stateless_apply`` (JAX) so the clipping runs inside the
compiled train step, and keeps its state (AutoClip's history) in optimizer variables, which
JAX's stateless train step carries from step to step. The rules on NumPy arrays (analysis,
teaching) are in :mod:`gradhealth.core.clipping`; their device versions in
:mod:`gradhealth.ops.clipping`.

References:
    Pascanu, Mikolov & Bengio (2013), https://arxiv.org/abs/1211.5063
    Brock, De, Smith & Simonyan (2021), https://arxiv.org/abs/2102.06171
    Seetharaman, Wichern, Pardo & Le Roux (2020), https://arxiv.org/abs/2007.14469
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from gradhealth._internal.validation import check_choice, check_positive_float, check_positive_int
from gradhealth.core.clipping import (
    DEFAULT_AGC_CLIP_FACTOR,
    DEFAULT_AGC_EPS,
    DEFAULT_AUTOCLIP_PERCENTILE,
    AutoClip,
)
from gradhealth.ops.clipping import (
    ops_adaptive_clip,
    ops_clip_by_global_norm,
    ops_clip_by_norm,
    ops_clip_by_value,
    ops_global_norm,
    ops_percentile,
)
from gradhealth.optim.wrapper import GradientWrapperOptimizer

__all__ = ["DEFAULT_AUTOCLIP_HISTORY", "METHODS", "ClippingOptimizer"]

METHODS: tuple[str, ...] = ("value", "norm", "global_norm", "agc", "autoclip")

DEFAULT_AUTOCLIP_HISTORY: int = 10_000
"""On the device AutoClip keeps the last 10,000 global norms (a ring buffer, 40 kB). The
paper's rule uses every norm seen so far; 10,000 steps is longer than most course-scale runs,
and for longer runs the percentile of the most recent 10,000 steps follows the same quantity
while keeping each step's sort cheap."""


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
        limit = ops_percentile(new_history, filled, self.percentile)
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

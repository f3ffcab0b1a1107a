"""The gradient checkup: one batch's per-layer gradients, statistics and a diagnosis.

Example:
    >>> import gradhealth as gh
    >>> model = gh.models.demo_network("sigmoid")
    >>> x, y = gh.data.digits_batch(128)
    >>> report = gh.checkup(model, x, y, loss="sparse_categorical_crossentropy")
    >>> report.status
    'vanishing'
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from gradhealth.adapters.keras_compat import walk_layers
from gradhealth.core.thresholds import Thresholds
from gradhealth.diagnosis.gradients import measure_gradients
from gradhealth.diagnosis.report import HealthReport, diagnose

__all__ = ["NORMALIZATION_LAYERS", "RESIDUAL_LAYERS", "checkup", "model_context"]

NORMALIZATION_LAYERS: tuple[str, ...] = ("BatchNormalization", "LayerNormalization",
                                         "GroupNormalization", "UnitNormalization",
                                         "RMSNormalization")
RESIDUAL_LAYERS: tuple[str, ...] = ("Add",)


def model_context(model: keras.Model, layer_names: list[str]) -> dict[str, Any]:
    """Facts about the model that the recommendations use (plain Python values)."""
    layers = walk_layers(model)
    by_name = {layer.name: layer for layer in layers}
    activations: dict[str, str] = {}
    initializers: dict[str, str] = {}
    for name in layer_names:
        layer = by_name.get(name.rsplit("/", 1)[-1])
        if layer is None:
            continue
        act = getattr(layer, "activation", None)
        if act is not None and getattr(act, "__name__", "linear") != "linear":
            activations[name] = act.__name__
        init = getattr(layer, "kernel_initializer", None)
        if init is not None:
            initializers[name] = type(init).__name__
    # An activation applied by a separate Activation layer counts for the Dense before it.
    separate = [getattr(getattr(layer, "activation", None), "__name__", None)
                for layer in layers if type(layer).__name__ == "Activation"]
    if separate and not activations:
        weighted = [n for n in layer_names if n in initializers][:-1]
        for name, act in zip(weighted, separate, strict=False):
            activations[name] = act
    optimizer = getattr(model, "optimizer", None)
    lr = None
    if optimizer is not None and not isinstance(optimizer, str):
        try:
            lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        except (TypeError, ValueError, AttributeError):
            lr = None
    kinds = {type(layer).__name__ for layer in layers}
    return {
        "model_name": model.name,
        "backend": keras.backend.backend(),
        "depth": len(layer_names),
        "activations": activations,
        "initializers": initializers,
        "has_normalization": bool(kinds & set(NORMALIZATION_LAYERS)),
        "has_residual": bool(kinds & set(RESIDUAL_LAYERS)),
        "learning_rate": lr,
        "n_params": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables)),
    }


def checkup(model: keras.Model, x: Any, y: Any = None, loss: Any = None,
            thresholds: Thresholds | dict | None = None,
            sample_weight: Any = None) -> HealthReport:
    """Examine a model's gradients on one batch and diagnose their health.

    One forward and backward pass (``training=True``, model state left unchanged), per-layer
    statistics in float64, then a diagnosis: each layer is classified ``healthy``,
    ``vanishing``, ``exploding``, ``dead`` or ``nonfinite`` by the documented
    :class:`~gradhealth.Thresholds`, scored 0-100, and explained with findings and concrete
    recommendations.

    Args:
        model: A built ``keras.Model`` with trainable weights (any backend).
        x: One input batch (array-like, first axis = examples).
        y: The targets for ``x``.
        loss: Keras loss name or object; defaults to the model's compiled loss.
        thresholds: A :class:`Thresholds`, a dict of overrides, or None for the defaults.
        sample_weight: Per-example weights, as in ``fit``. ``x``, ``y`` and ``loss`` take
            every form ``fit`` does (see :func:`gradhealth.layer_gradients`): a dataset or
            generator as ``x`` gives one batch.

    Returns:
        A :class:`HealthReport`.

    Raises:
        ValueError: Unbuilt model, no trainable weights, empty/non-finite batch, mismatched
            batch sizes, unknown or missing loss, invalid thresholds.
        TypeError: Wrong argument types (not a model, non-numeric data).

    Example:
        >>> report = checkup(model, x, y, loss="sparse_categorical_crossentropy")
        >>> report.status, report.score
        ('vanishing', 21.3)
        >>> print(report.findings[0])

    References:
        Hochreiter 1991; Bengio, Simard & Frasconi 1994 (vanishing gradients);
        Glorot & Bengio 2010 (initialization and saturation); Pascanu, Mikolov & Bengio 2013
        (exploding gradients).
    """
    t = Thresholds.coerce(thresholds)
    value, stats = measure_gradients(model, x, y, loss, sample_weight)
    layer_names = list(dict.fromkeys(stats["layer"]))
    return diagnose(stats, t, model_context(model, layer_names), loss=value)

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

import json
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradhealth._validation import check_batch_pair, check_input_shape, check_model
from gradhealth.adapters import get_adapter
from gradhealth.core import diagnosis
from gradhealth.core.diagnosis import Recommendation
from gradhealth.core.stats import tensor_stats
from gradhealth.core.thresholds import Thresholds

NORMALIZATION_LAYERS: tuple[str, ...] = ("BatchNormalization", "LayerNormalization",
                                         "GroupNormalization", "UnitNormalization",
                                         "RMSNormalization")
RESIDUAL_LAYERS: tuple[str, ...] = ("Add",)
_LOSS_CACHE: dict[str, Callable] = {}


def resolve_loss(model: keras.Model, loss: Any) -> Callable:
    """The loss to differentiate: ``loss`` if given, else the model's compiled loss.

    Raises:
        ValueError: Neither is available, or ``loss`` is an unknown name or a multi-output
            structure.
        TypeError: ``loss`` is neither a name nor a callable.
    """
    if loss is None:
        compiled = getattr(model, "compiled", False) and getattr(model, "loss", None) is not None
        if not compiled:
            raise ValueError(
                "Argument `loss` is required: the model is not compiled with a loss. Pass a "
                "Keras loss name or object, e.g. loss='sparse_categorical_crossentropy'. "
                "Received: loss=None"
            )
        loss = model.loss
    if isinstance(loss, str):
        if loss not in _LOSS_CACHE:
            try:
                _LOSS_CACHE[loss] = keras.losses.get(loss)
            except ValueError as e:
                raise ValueError(
                    "Argument `loss` is not a known Keras loss name (e.g. 'mse', "
                    f"'sparse_categorical_crossentropy'). Received: loss={loss!r}"
                ) from e
        return _LOSS_CACHE[loss]
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(
            "Argument `loss` must be a single loss; models with several outputs/losses are not "
            f"supported by the checkup yet. Received: loss={loss!r}"
        )
    if not callable(loss):
        raise TypeError(
            "Argument `loss` must be a Keras loss name, a keras.losses.Loss or a callable "
            f"(y_true, y_pred) -> loss. Received: loss={loss!r} (of type {type(loss).__name__})"
        )
    return loss


def _layer_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else path


def _run(model: keras.Model, x: Any, y: Any, loss: Any
         ) -> tuple[float, list[Any], list[np.ndarray | None], list[np.ndarray]]:
    check_model(model)
    xa, ya = check_batch_pair(x, y)
    check_input_shape(model, xa)
    loss_fn = resolve_loss(model, loss)
    adapter = get_adapter()
    try:
        value, grads, weights = adapter.compute_gradients(model, xa, ya, loss_fn)
    except adapter.USER_ERRORS as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[-1][:300] if lines else type(e).__name__
        raise ValueError(
            f"Computing the loss of model {model.name!r} failed for x of shape {xa.shape} and y "
            f"of shape {ya.shape} ({type(e).__name__}: {reason}). Check that "
            f"`y` matches the model's output and the loss. Received: loss={loss!r}"
        ) from e
    return value, list(model.trainable_variables), grads, weights


def layer_gradients(model: keras.Model, x: Any, y: Any, loss: Any = None
                    ) -> OrderedDict[str, np.ndarray]:
    """Gradients of the loss on one batch for every trainable variable, input to output.

    Runs one forward pass with ``training=True`` and one backward pass. The model is not changed:
    non-trainable state (batch-norm statistics, RNG) is restored afterwards.

    Args:
        model: A built ``keras.Model`` with trainable weights.
        x: Input batch (array-like, first axis = examples).
        y: Targets for ``x``.
        loss: A Keras loss name or object; defaults to the model's compiled loss.

    Returns:
        ``OrderedDict`` mapping ``variable.path`` to the gradient as a NumPy array (zeros for a
        variable the loss does not depend on).

    Raises:
        ValueError: Unbuilt model, no trainable weights, empty or non-finite batch, ``x``/``y``
            batch sizes differ, unknown loss, or no loss at all.
        TypeError: ``model`` is not a Keras model or the data is not numeric.

    Example:
        >>> grads = layer_gradients(model, x, y, loss="mse")
        >>> list(grads)[:2]
        ['hidden_1/kernel', 'hidden_1/bias']
    """
    _, variables, grads, _ = _run(model, x, y, loss)
    return OrderedDict(
        (v.path, np.zeros(tuple(v.shape), dtype=np.float32) if g is None else g)
        for v, g in zip(variables, grads, strict=True)
    )


def _stats_frame(variables: list[Any], grads: list[np.ndarray | None],
                 weights: list[np.ndarray]) -> pd.DataFrame:
    rows = []
    for v, g, weight in zip(variables, grads, weights, strict=True):
        connected = g is not None
        stats = tensor_stats(g if connected else np.zeros_like(weight), weight)
        rows.append({"layer": _layer_of(v.path), "variable": v.path.rsplit("/", 1)[-1],
                     "path": v.path, "shape": tuple(int(d) for d in v.shape),
                     "size": int(np.prod(v.shape)), **stats, "connected": connected})
    return pd.DataFrame(rows)


def gradient_stats(model: keras.Model, x: Any, y: Any, loss: Any = None) -> pd.DataFrame:
    """Per-variable gradient statistics on one batch, input to output.

    Every statistic is computed in float64 with max-abs scaling (see
    :func:`gradhealth.core.stats.tensor_stats`), so a 1e-20 gradient is reported as such rather
    than as the 0.0 a float32 ``tf.norm`` returns.

    Args:
        model: A built ``keras.Model``.
        x: Input batch.
        y: Targets.
        loss: Keras loss name or object; defaults to the compiled loss.

    Returns:
        A DataFrame with one row per trainable variable and columns ``layer, variable, path,
        shape, size, grad_norm, grad_mean_abs, grad_max_abs, grad_std, zero_fraction,
        nonfinite_count, weight_norm, grad_to_weight, dead_unit_fraction, connected``.

    Raises:
        ValueError, TypeError: As :func:`layer_gradients`.
    """
    _, variables, grads, weights = _run(model, x, y, loss)
    return _stats_frame(variables, grads, weights)


def _walk_layers(model: keras.Layer) -> list[keras.Layer]:
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        if getattr(layer, "layers", None):
            found.extend(_walk_layers(layer))
    return found


def model_context(model: keras.Model, layer_names: list[str]) -> dict[str, Any]:
    """Facts about the model that the recommendations use (plain Python values)."""
    layers = _walk_layers(model)
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


@dataclass
class HealthReport:
    """The result of :func:`checkup`.

    Attributes:
        status: ``"healthy"``, ``"vanishing"``, ``"exploding"``, ``"dead"`` or ``"nonfinite"``.
        score: Health score 0-100 (see :func:`gradhealth.core.diagnosis.health_score`).
        layers: One row per layer with weights: ``position, layer, n_params, grad_norm, ...,
            status, decades_beyond, credit``.
        variables: Per-variable statistics (as :func:`gradient_stats`).
        findings: Plain-English sentences naming layers and numbers.
        recommendations: Concrete fixes tied to the findings.
        loss: The batch loss.
        thresholds: The thresholds used.
        context: Facts about the model (activations, initializers, normalization, depth...).
    """

    status: str
    score: float
    layers: pd.DataFrame
    variables: pd.DataFrame
    findings: list[str]
    recommendations: list[Recommendation]
    loss: float
    thresholds: Thresholds
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """Whether the overall status is ``"healthy"``."""
        return self.status == "healthy"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict of the whole report (NaN/inf become None)."""
        def records(df: pd.DataFrame) -> list[dict[str, Any]]:
            return [{k: _plain(v) for k, v in row.items()} for row in df.to_dict("records")]

        return {
            "status": self.status,
            "score": self.score,
            "loss": _plain(self.loss),
            "findings": list(self.findings),
            "recommendations": [r.to_dict() for r in self.recommendations],
            "layers": records(self.layers),
            "variables": records(self.variables),
            "thresholds": self.thresholds.to_dict(),
            "context": {k: _plain(v) for k, v in self.context.items()},
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text (strict JSON: no NaN literals)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def to_markdown(self) -> str:
        """The report as Markdown: summary, layer table, findings, recommendations."""
        from gradhealth.report.text import report_markdown

        return report_markdown(self)

    def to_html(self) -> str:
        """A self-contained HTML page with the gradient-flow plot embedded (no external files)."""
        from gradhealth.report.html import report_html

        return report_html(self)

    def _repr_html_(self) -> str:
        from gradhealth.report.html import report_fragment

        return report_fragment(self)

    def plot(self, ax: Any = None) -> Any:
        """The per-layer gradient-flow plot (log scale), coloured by status."""
        from gradhealth.report.plots import plot_gradient_flow

        return plot_gradient_flow(self, ax=ax)

    def prescribe(self, overrides: dict[str, Any] | None = None) -> Any:
        """The ordered treatment plan for this report (see :func:`gradhealth.treatment.prescribe`)."""
        from gradhealth.treatment import prescribe

        return prescribe(self, overrides=overrides)

    def save(self, path: str) -> str:
        """Write the report atomically as ``.json``, ``.html`` or ``.md`` (by extension)."""
        from gradhealth._io import atomic_write_text

        text = {".json": self.to_json, ".html": self.to_html, ".md": self.to_markdown}
        suffix = "." + str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else ""
        if suffix not in text:
            raise ValueError(
                f"Argument `path` must end in .json, .html or .md. Received: path={path!r}"
            )
        atomic_write_text(path, text[suffix]())
        return str(path)

    def __repr__(self) -> str:
        return (f"HealthReport(status={self.status!r}, score={self.score}, "
                f"layers={len(self.layers)}, findings={len(self.findings)}, "
                f"recommendations={len(self.recommendations)})")


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def diagnose(variables: pd.DataFrame, thresholds: Thresholds | dict | None = None,
             context: dict[str, Any] | None = None, loss: float = float("nan")) -> HealthReport:
    """Build a :class:`HealthReport` from a per-variable statistics table (no model needed).

    Useful to re-diagnose saved statistics with other thresholds.
    """
    t = Thresholds.coerce(thresholds)
    ctx = context or {}
    layers = diagnosis.classify_layers(diagnosis.aggregate_layers(variables), t)
    return HealthReport(
        status=diagnosis.overall_status(layers),
        score=diagnosis.health_score(layers),
        layers=layers,
        variables=variables,
        findings=diagnosis.findings(layers, t, ctx),
        recommendations=diagnosis.recommendations(layers, t, ctx),
        loss=loss,
        thresholds=t,
        context=ctx,
    )


def checkup(model: keras.Model, x: Any, y: Any, loss: Any = None,
            thresholds: Thresholds | dict | None = None) -> HealthReport:
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
    value, variables, grads, weights = _run(model, x, y, loss)
    stats = _stats_frame(variables, grads, weights)
    layer_names = list(dict.fromkeys(stats["layer"]))
    return diagnose(stats, t, model_context(model, layer_names), loss=value)

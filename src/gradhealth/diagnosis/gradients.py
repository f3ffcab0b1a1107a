"""One batch's gradients and their statistics: the measuring half of the checkup.

:func:`layer_gradients` and :func:`gradient_stats` run one forward and backward pass through the
backend adapter (model state left unchanged) and turn the gradients into per-variable
statistics; :mod:`gradhealth.diagnosis.checkup` adds the diagnosis.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradhealth._internal.model_checks import check_input_shape, check_model
from gradhealth._internal.validation import check_batch_pair
from gradhealth.adapters import get_adapter
from gradhealth.core.stats import tensor_stats

__all__ = ["gradient_stats", "layer_gradients", "resolve_loss", "run_gradients", "stats_frame"]

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


def run_gradients(model: keras.Model, x: Any, y: Any, loss: Any
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
    _, variables, grads, _ = run_gradients(model, x, y, loss)
    return OrderedDict(
        (v.path, np.zeros(tuple(v.shape), dtype=np.float32) if g is None else g)
        for v, g in zip(variables, grads, strict=True)
    )


def stats_frame(variables: list[Any], grads: list[np.ndarray | None],
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
    _, variables, grads, weights = run_gradients(model, x, y, loss)
    return stats_frame(variables, grads, weights)

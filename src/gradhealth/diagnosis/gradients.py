"""One batch's gradients and their statistics: the measuring half of the checkup.

:func:`gradient_stats` (and :func:`measure_gradients`, which the checkup calls) runs one forward
and backward pass through the backend adapter, compiled at most once per model, and reduces every
gradient to the 8 statistics of :func:`gradhealth.ops.stats.device_stats` **on the device**: only
``(n_variables, 8)`` numbers reach the host, from which the table is built.
:func:`layer_gradients` brings the gradients themselves to the host. The model's state is left
unchanged.

Every input form ``fit`` accepts is accepted here too:

- ``x`` one array, or a list (by position) / dict (by input name) of arrays for a multi-input
  model; ``y`` likewise for a multi-output model, or None for a model trained by ``add_loss``
  alone; ``sample_weight`` an array (or one per output);
- a ``tf.data.Dataset``, ``keras.utils.PyDataset``, torch ``DataLoader``, generator or iterator
  as ``x`` (with ``y`` None): the checkup takes **one batch** from it (``(x,)``, ``(x, y)`` or
  ``(x, y, sample_weight)``); a dataset, a PyDataset (batch 0) and a DataLoader are not
  consumed, a generator or iterator advances by one batch;
- the compiled loss by default (several outputs, ``loss_weights``, ``add_loss`` and
  regularization terms: what ``fit`` minimises), or an explicit loss;
- subclassed models with or without a ``training`` argument in ``call`` (passed only when
  accepted, as Keras' trainers do); mixed precision (``mixed_float16`` is loss-scaled, see
  :data:`gradhealth.adapters.FLOAT16_LOSS_SCALE`; statistics are computed in float32);
- models built under a ``tf.distribute`` strategy scope or a ``keras.distribution``
  distribution: the statistics are those of the whole batch, as on one device.
"""

from __future__ import annotations

import functools
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradhealth._internal.model_checks import (
    call_accepts_training,
    check_input_shape,
    check_model,
    first_batch,
    is_data_source,
)
from gradhealth._internal.validation import check_batch, describe_shapes, short_repr
from gradhealth.adapters import ProbeResult, get_adapter, probe
from gradhealth.adapters.fused import stats_kernels
from gradhealth.core.stats import tensor_stats
from gradhealth.core.table import Table
from gradhealth.ops import stats as ops_stats
from gradhealth.ops.objective import make_objective
from gradhealth.ops.stats import DEVICE_STATS, device_stats

__all__ = ["STATS_COLUMNS", "device_stats_table", "gradient_stats", "layer_gradients",
           "measure_gradients", "prepare_batch", "resolve_loss", "run_gradients", "stats_frame"]

STATS_COLUMNS: tuple[str, ...] = (
    "layer", "variable", "path", "shape", "size", "grad_norm", "grad_mean_abs",
    "grad_max_abs", "grad_std", "zero_fraction", "nonfinite_count", "weight_norm",
    "grad_to_weight", "dead_unit_fraction", "connected")
"""The columns of :func:`gradient_stats`, in order."""

_NONFINITE = DEVICE_STATS.index("nonfinite_count")
_LOSS_CACHE: dict[str, Callable] = {}


@functools.cache
def _device_stats(backend: str) -> Callable[[list[Any], list[Any]], Any]:
    """:func:`gradhealth.ops.stats.device_stats` with the backend's fused kernels.

    The passes the monitor runs (:mod:`gradhealth.adapters.fused`): on torch, whose checkup
    pass runs eagerly, multi-tensor ``torch._foreach`` kernels instead of a dozen ``keras.ops``
    calls per shape. One function per backend, so the compiled probe step is found again in
    its cache.
    """
    return functools.partial(device_stats, kernels=stats_kernels(ops_stats, backend))


def resolve_loss(model: keras.Model, loss: Any) -> Callable:
    """A single loss as a callable: ``loss`` if given, else the model's compiled loss.

    Kept for callers that need one loss function; the checkup itself differentiates
    :func:`gradhealth.ops.objective.make_objective`, which also handles several outputs.

    Raises:
        ValueError: Neither is available, or ``loss`` is an unknown name or a structure.
        TypeError: ``loss`` is neither a name nor a callable.
    """
    if loss is None:
        make_objective(model, None)  # raises the "loss is required" error
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
            f"Argument `loss` must be a single loss here. Received: loss={short_repr(loss)}")
    if not callable(loss):
        raise TypeError(
            "Argument `loss` must be a Keras loss name, a keras.losses.Loss or a callable "
            f"(y_true, y_pred) -> loss. Received: loss={loss!r} (of type {type(loss).__name__})"
        )
    return loss


def _layer_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else path


def prepare_batch(model: keras.Model, x: Any, y: Any = None, sample_weight: Any = None
                  ) -> tuple[Any, Any, Any]:
    """Check the model and one batch in any form ``fit`` takes; return NumPy structures.

    A data source as ``x`` (dataset, PyDataset, DataLoader, generator) gives one batch.

    Raises:
        ValueError, TypeError: As :func:`layer_gradients`.
    """
    check_model(model)
    if is_data_source(x):
        for name, value in (("y", y), ("sample_weight", sample_weight)):
            if value is not None:
                raise ValueError(
                    f"Argument `{name}` must be None when `x` is a dataset, PyDataset or "
                    f"generator (it yields the {name} itself, as in fit). Received: "
                    f"{name}={short_repr(value)}")
        x, y, sample_weight = first_batch(x)
    xa, ya, wa = check_batch(x, y, sample_weight)
    check_input_shape(model, xa)
    return xa, ya, wa


def _probe(model: keras.Model, x: Any, y: Any, loss: Any, sample_weight: Any,
           reduce: Callable | None, checked: bool = False) -> ProbeResult:
    xa, ya, wa = (x, y, sample_weight) if checked else prepare_batch(model, x, y, sample_weight)
    objective = make_objective(model, loss)
    adapter = get_adapter()
    try:
        return probe(model, objective, xa, ya, wa, reduce, call_accepts_training(model),
                     nonfinite_column=_NONFINITE)
    except adapter.USER_ERRORS as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[-1][:300] if lines else type(e).__name__
        raise ValueError(
            f"Computing the loss of model {model.name!r} failed for x of shape "
            f"{describe_shapes(xa)} and y of shape {describe_shapes(ya)} "
            f"({type(e).__name__}: {reason}). Check that `y` matches the model's output and "
            f"the loss. Received: loss={short_repr(loss)}"
        ) from e


def run_gradients(model: keras.Model, x: Any, y: Any, loss: Any, sample_weight: Any = None
                  ) -> tuple[float, list[Any], list[np.ndarray | None], list[np.ndarray]]:
    """One pass bringing the gradients to the host: ``(loss, variables, grads, weights)``.

    ``grads[i]`` is None for a variable the loss does not depend on (JAX gives zeros).
    """
    result = _probe(model, x, y, loss, sample_weight, None)
    grads, weights = result.payload
    grads = [g if c else None for g, c in zip(grads, result.connected, strict=True)]
    return result.loss, list(result.variables), grads, weights


_DESCRIBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _describe(model: keras.Model, variables: list[Any]) -> Table:
    """The name and shape columns of ``variables``, computed once per model and variable set.

    (Reading ``path`` and ``shape`` of 60 backend variables costs ~1 ms, a tenth of a small
    model's training step.)
    """
    cached = _DESCRIBED.get(model)
    if cached is not None and len(cached[0]) == len(variables) and all(
            a is b for a, b in zip(cached[0], variables, strict=True)):
        return cached[1]
    paths = [v.path for v in variables]
    shapes = [tuple(int(d) for d in v.shape) for v in variables]
    described = Table({"layer": [_layer_of(p) for p in paths],
                       "variable": [p.rsplit("/", 1)[-1] for p in paths],
                       "path": paths, "shape": shapes,
                       "size": np.array([int(np.prod(s)) for s in shapes], dtype=np.int64)})
    _DESCRIBED[model] = (list(variables), described)
    return described


def device_stats_table(model: keras.Model, variables: list[Any], stats: np.ndarray,
                       connected: list[bool]) -> Table:
    """The statistics table from the ``(n_variables, 8)`` matrix of ``device_stats``.

    Args:
        model: The model the variables belong to.
        variables: The trainable variables, in the order of the rows.
        stats: One row per variable, columns :data:`gradhealth.ops.stats.DEVICE_STATS`.
        connected: Per variable, whether the loss depends on it.

    Returns:
        A :class:`~gradhealth.core.table.Table` with the columns :data:`STATS_COLUMNS`.
    """
    values = np.asarray(stats, dtype=np.float64).reshape(len(variables), len(DEVICE_STATS))
    described = _describe(model, variables)
    columns: dict[str, Any] = {name: described[name] for name in described}
    for i, name in enumerate(DEVICE_STATS):
        columns[name] = values[:, i]
    columns["nonfinite_count"] = np.rint(columns["nonfinite_count"]).astype(np.int64)
    weight_norm = columns["weight_norm"]
    with np.errstate(divide="ignore", invalid="ignore"):
        columns["grad_to_weight"] = np.where(weight_norm > 0, columns["grad_norm"] / weight_norm,
                                             np.nan)
    columns["connected"] = np.asarray(connected, dtype=bool)
    return Table({name: columns[name] for name in STATS_COLUMNS})


def stats_frame(variables: list[Any], grads: list[np.ndarray | None],
                weights: list[np.ndarray]) -> pd.DataFrame:
    """The statistics table from gradients on the host (float64 :func:`tensor_stats`)."""
    rows = []
    for v, g, weight in zip(variables, grads, weights, strict=True):
        connected = g is not None
        stats = tensor_stats(g if connected else np.zeros_like(weight), weight)
        rows.append({"layer": _layer_of(v.path), "variable": v.path.rsplit("/", 1)[-1],
                     "path": v.path, "shape": tuple(int(d) for d in v.shape),
                     "size": int(np.prod(v.shape)), **stats, "connected": connected})
    return pd.DataFrame(rows, columns=list(STATS_COLUMNS))


def measure_gradients(model: keras.Model, x: Any, y: Any = None, loss: Any = None,
                      sample_weight: Any = None, *, checked: bool = False
                      ) -> tuple[float, Table, list[Any]]:
    """The batch loss and the per-variable statistics table, reduced on the device.

    What :func:`gradhealth.checkup` measures; see :func:`gradient_stats` for the arguments.
    ``checked=True`` says the batch already came from :func:`prepare_batch`.

    Returns:
        ``(loss, table, variables)``: the table with the columns :func:`gradient_stats`
        returns, as NumPy columns, and the trainable variables of its rows.
    """
    result = _probe(model, x, y, loss, sample_weight, _device_stats(keras.backend.backend()),
                    checked)
    table = device_stats_table(model, result.variables, result.payload, result.connected)
    return result.loss, table, result.variables


def layer_gradients(model: keras.Model, x: Any, y: Any = None, loss: Any = None,
                    sample_weight: Any = None) -> OrderedDict[str, np.ndarray]:
    """Gradients of the loss on one batch for every trainable variable, input to output.

    Runs one forward pass (``training=True`` when ``model.call`` accepts it) and one backward
    pass, compiled at most once per model. The model is not changed: non-trainable state (batch-norm
    statistics, RNG) and metric state are restored.

    Args:
        model: A built ``keras.Model`` with trainable weights.
        x: Input batch: an array, a list/dict of arrays (multi-input), or a dataset,
            ``PyDataset``, DataLoader or generator, from which one batch is taken.
        y: Targets for ``x`` (array, or list/dict per output); None with a data source or for
            a model trained by ``add_loss`` alone.
        loss: A Keras loss name or object, or a list/dict with one per output; defaults to
            the model's compiled loss (with its ``loss_weights``). ``add_loss`` and
            regularization terms are always included, as in ``fit``.
        sample_weight: Per-example weights (or one array per output), as in ``fit``.

    Returns:
        ``OrderedDict`` mapping ``variable.path`` to the gradient as a float32 NumPy array
        (zeros for a variable the loss does not depend on).

    Raises:
        ValueError: Unbuilt model, no trainable weights, empty or non-finite batch, arrays
            with different numbers of examples, inputs that do not match the model, unknown
            loss, or no loss at all.
        TypeError: ``model`` is not a Keras model or the data is not numeric.

    Example:
        >>> grads = layer_gradients(model, x, y, loss="mse")
        >>> list(grads)[:2]
        ['hidden_1/kernel', 'hidden_1/bias']
        >>> layer_gradients(two_input_model, [x_image, x_meta], y)  # one array per input
    """
    _, variables, grads, _ = run_gradients(model, x, y, loss, sample_weight)
    return OrderedDict(
        (v.path, np.zeros(tuple(v.shape), dtype=np.float32) if g is None else g)
        for v, g in zip(variables, grads, strict=True)
    )


def gradient_stats(model: keras.Model, x: Any, y: Any = None, loss: Any = None,
                   sample_weight: Any = None) -> pd.DataFrame:
    """Per-variable gradient statistics on one batch, input to output, reduced on the device.

    Each gradient is reduced inside the compiled step by
    :func:`gradhealth.ops.stats.device_stats` (the same statistics as
    :func:`gradhealth.core.stats.tensor_stats`): entries are divided by the largest finite
    magnitude before squaring, so a 1e-20 gradient is reported as such rather than as the 0.0
    a float32 ``tf.norm`` returns, and values from 1e-30 to 1e30 come out to about 1e-7
    relative. Only ``(n_variables, 8)`` numbers are copied to the host.

    Args:
        model: A built ``keras.Model``.
        x: Input batch, in any form :func:`layer_gradients` takes.
        y: Targets (None with a data source or an ``add_loss``-only model).
        loss: Keras loss (or one per output); defaults to the compiled loss.
        sample_weight: Per-example weights, as in ``fit``.

    Returns:
        A DataFrame with one row per trainable variable and the columns
        :data:`STATS_COLUMNS`: ``layer, variable, path, shape, size, grad_norm,
        grad_mean_abs, grad_max_abs, grad_std, zero_fraction, nonfinite_count, weight_norm,
        grad_to_weight, dead_unit_fraction, connected``.

    Raises:
        ValueError, TypeError: As :func:`layer_gradients`.

    Example:
        >>> stats = gradient_stats(model, dataset)  # one batch of a tf.data.Dataset
        >>> stats[["path", "grad_norm"]].head(2)

    References:
        Blue 1978, "A portable Fortran program to find the Euclidean norm of a vector"
        (scaling before squaring).
    """
    return measure_gradients(model, x, y, loss, sample_weight)[1].to_frame()

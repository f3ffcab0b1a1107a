"""Checks of Keras objects (models, activations) with Keras-style messages.

Kept apart from :mod:`gradhealth._internal.validation` so that the NumPy-only core can use the
plain checks without importing Keras.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from gradhealth._internal.validation import short_repr

__all__ = ["call_accepts_training", "check_activation", "check_input_shape", "check_model",
           "first_batch", "is_data_source"]


def check_activation(activation: Any) -> Any:
    """Return ``activation`` if Keras knows it (a name or a callable), else raise naming it."""
    try:
        keras.activations.get(activation)
    except ValueError as e:
        raise ValueError(
            f"Argument `activation` is not a Keras activation. Received: activation={activation!r}"
        ) from e
    return activation


def check_model(model: Any) -> Any:
    """Check that ``model`` is a built Keras model with trainable weights."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `model` must be a keras.Model. Received: model={short_repr(model)} "
            f"(of type {type(model).__name__})"
        )
    if not model.built:
        raise ValueError(
            "Argument `model` must be built before its gradients can be examined: give it an "
            "`Input` or call it on a batch first. "
            f"Received: model={model.name!r} (built=False)"
        )
    if not model.trainable_variables:
        raise ValueError(
            "Argument `model` has no trainable weights, so there are no gradients to examine. "
            f"Received: model={model.name!r} with {len(model.weights)} weights, none trainable"
        )
    return model


def _declared_inputs(model: Any) -> list[tuple[str, tuple]] | None:
    """``(name, shape)`` of each declared input of a functional/Sequential model, else None."""
    try:
        inputs = getattr(model, "inputs", None)
        if not inputs:
            return None
        return [(str(getattr(t, "name", i)), tuple(t.shape)) for i, t in enumerate(inputs)]
    except (AttributeError, ValueError):
        return None


def _check_one_shape(model: Any, label: str, expected: tuple, got: tuple) -> None:
    if len(expected) != len(got) or any(
        e is not None and e != g for e, g in zip(expected[1:], got[1:], strict=True)
    ):
        raise ValueError(
            f"Argument `{label}` has shape {got}, but model {model.name!r} expects inputs of "
            f"shape {expected} (None = any size). Received: {label}.shape={got}"
        )


def check_input_shape(model: Any, x: Any) -> None:
    """Compare ``x`` (an array, or a list/dict of arrays) with a model's declared inputs.

    A functional or Sequential model declares its inputs; a list feeds them by position, a dict
    by input name (as ``fit`` does). Subclassed models declare none and are not checked here.

    Raises:
        ValueError: Wrong number of inputs, unknown input names, or a wrong feature shape.
    """
    declared = _declared_inputs(model)
    if declared is None:
        return
    names = [n for n, _ in declared]
    if isinstance(x, np.ndarray):
        if len(declared) == 1:
            _check_one_shape(model, "x", declared[0][1], x.shape)
            return
        raise ValueError(
            f"Argument `x` must hold one array per input of model {model.name!r} ({len(names)} "
            f"inputs: {names}), as a list in that order or a dict keyed by those names. "
            f"Received: x={short_repr(x)}")
    if isinstance(x, dict):
        unknown = sorted(set(x) - set(names))
        missing = [n for n in names if n not in x]
        if unknown or missing:
            raise ValueError(
                f"Argument `x` must be keyed by the input names of model {model.name!r} "
                f"({names}). Received: x with keys {sorted(x)} (unknown: {unknown}, missing: "
                f"{missing})")
        for name, shape in declared:
            if isinstance(x[name], np.ndarray):
                _check_one_shape(model, f"x[{name!r}]", shape, x[name].shape)
        return
    if len(x) != len(declared):
        raise ValueError(
            f"Argument `x` must hold one array per input of model {model.name!r} ({len(names)} "
            f"inputs: {names}). Received: a {type(x).__name__} of {len(x)}")
    for i, ((_, shape), part) in enumerate(zip(declared, x, strict=True)):
        if isinstance(part, np.ndarray):
            _check_one_shape(model, f"x[{i}]", shape, part.shape)


def call_accepts_training(model: Any) -> bool:
    """Whether ``model.call`` takes a ``training`` argument (or ``**kwargs``).

    Keras' own trainers pass ``training=True`` only to a ``call`` that accepts it; a subclassed
    model whose ``call(self, x)`` has no such argument is called as ``model(x)``.
    """
    try:
        params = inspect.signature(model.call).parameters
    except (TypeError, ValueError):
        return True
    return "training" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _is_tf_dataset(data: Any) -> bool:
    # Recognised by its class's module so that no TensorFlow import is needed on other backends.
    module = type(data).__module__ or ""
    return module.startswith("tensorflow") and hasattr(data, "element_spec")


def _is_torch_loader(data: Any) -> bool:
    return (type(data).__module__ or "").startswith("torch.utils.data")


def is_data_source(data: Any) -> bool:
    """Whether ``data`` is a source of batches (``tf.data.Dataset``, ``keras.utils.PyDataset``,
    a torch ``DataLoader``, a generator or another iterator) rather than one batch."""
    return (_is_tf_dataset(data) or isinstance(data, keras.utils.PyDataset)
            or _is_torch_loader(data) or isinstance(data, Iterator))


def first_batch(data: Any) -> tuple[Any, Any, Any]:
    """Take one batch ``(x, y, sample_weight)`` from a data source, as ``fit`` reads it.

    ``tf.data.Dataset``, ``PyDataset`` (batch 0) and torch ``DataLoader`` are not consumed; a
    generator or iterator is advanced by one batch (it cannot be rewound). Elements may be
    ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``.

    Raises:
        ValueError: The source is empty, or an element has more than three parts.
    """
    try:
        if isinstance(data, keras.utils.PyDataset):
            element = data[0]
        elif isinstance(data, Iterator):
            element = next(data)
        else:
            element = next(iter(data))
    except (StopIteration, IndexError) as e:
        raise ValueError(
            f"Argument `x` is an empty data source: it yielded no batch. Received: "
            f"x={short_repr(data)}") from e
    if isinstance(element, list):
        element = tuple(element)
    if isinstance(element, tuple) and len(element) > 3:
        raise ValueError(
            "Argument `x` must yield `x`, `(x, y)` or `(x, y, sample_weight)` batches. "
            f"Received: an element with {len(element)} parts")
    x, y, sw = keras.utils.unpack_x_y_sample_weight(element)
    to_numpy = lambda t: t if t is None else np.asarray(t)  # noqa: E731
    return tuple(keras.tree.map_structure(to_numpy, part) if part is not None else None
                 for part in (x, y, sw))

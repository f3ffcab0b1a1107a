"""The loss a checkup differentiates, written with ``keras.ops`` so every backend traces it.

``fit`` minimises the compiled loss (one loss per output, weighted by ``loss_weights``, with
``sample_weight``) plus every ``add_loss`` and regularization term; :func:`make_objective` builds
that same function for a checkup, from the compiled loss (``model.compute_loss``, the method
``fit`` calls) or from a loss given explicitly (one loss, or a list/dict with one per output).
The backend adapters call it inside their compiled gradient step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
from keras import ops

from gradhealth._internal.validation import short_repr

__all__ = ["Objective", "make_objective"]

Fn = Callable[[keras.Model, Any, Any, Any, Any], Any]


@dataclass(frozen=True)
class Objective:
    """``fn(model, x, y, y_pred, sample_weight) -> scalar loss`` and a key for caching traces.

    Attributes:
        fn: The loss, written with ``keras.ops`` (traceable on every backend).
        key: Identifies the loss: two objectives with equal keys compute the same function,
            so a compiled gradient step traced for one serves the other.
        compiled: Whether the loss is the model's compiled loss (``model.compute_loss``).
    """

    fn: Fn
    key: tuple
    compiled: bool


class _FunctionLoss(keras.losses.Loss):
    """A plain ``loss(y_true, y_pred)`` function reduced like a compiled one.

    ``compile(loss=fn)`` wraps ``fn`` so that ``Loss.__call__`` applies ``sample_weight``, masks
    and the ``sum_over_batch_size`` reduction; this class does the same for an explicit loss.
    """

    def __init__(self, fn: Callable) -> None:
        super().__init__(name=getattr(fn, "__name__", "loss"))
        self.fn = fn

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return self.fn(y_true, y_pred)


_BY_NAME: dict[str, keras.losses.Loss] = {}


def _one_loss(loss: Any, label: str) -> keras.losses.Loss:
    """A ``keras.losses.Loss`` from a name, a Loss or a callable, checked."""
    if isinstance(loss, str):
        if loss not in _BY_NAME:
            try:
                fn = keras.losses.get(loss)
            except ValueError as e:
                raise ValueError(
                    f"Argument `{label}` is not a known Keras loss name (e.g. 'mse', "
                    f"'sparse_categorical_crossentropy'). Received: {label}={loss!r}") from e
            _BY_NAME[loss] = fn if isinstance(fn, keras.losses.Loss) else _FunctionLoss(fn)
        return _BY_NAME[loss]
    if isinstance(loss, keras.losses.Loss):
        return loss
    if callable(loss):
        return _FunctionLoss(loss)
    raise TypeError(
        f"Argument `{label}` must be a Keras loss name, a keras.losses.Loss or a callable "
        f"(y_true, y_pred) -> loss. Received: {label}={short_repr(loss)} (of type "
        f"{type(loss).__name__})")


def _output_names(model: keras.Model, n: int) -> list[str] | None:
    names = getattr(model, "output_names", None)
    return list(names) if names and len(names) == n else None


def _flat_outputs(model: keras.Model, y_pred: Any) -> list[tuple[str | int, Any]]:
    """``(name or position, tensor)`` for each output of a multi-output model."""
    if isinstance(y_pred, dict):
        return list(y_pred.items())
    names = _output_names(model, len(y_pred)) or list(range(len(y_pred)))
    return list(zip(names, y_pred, strict=True))


def _pick(part: Any, key: str | int, position: int, label: str, n: int) -> Any:
    """The entry of ``y``/``sample_weight``/``loss`` for one output (by name or position)."""
    if isinstance(part, dict):
        if key not in part:
            raise ValueError(
                f"Argument `{label}` is a dict but has no entry for output {key!r}. "
                f"Received: {label} keys {sorted(part)}")
        return part[key]
    if isinstance(part, (list, tuple)):
        if len(part) != n:
            raise ValueError(
                f"Argument `{label}` must have one entry per model output ({n}). "
                f"Received: {label} with {len(part)} entries")
        return part[position]
    return part


def _explicit(loss: Any) -> Fn:
    multi = isinstance(loss, (list, tuple, dict))
    if multi:
        losses = ({k: None if v is None else _one_loss(v, f"loss[{k!r}]") for k, v in loss.items()}
                  if isinstance(loss, dict)
                  else [None if v is None else _one_loss(v, f"loss[{i}]")
                        for i, v in enumerate(loss)])
    else:
        single = _one_loss(loss, "loss")

    def fn(model: keras.Model, x: Any, y: Any, y_pred: Any, sample_weight: Any) -> Any:
        if not isinstance(y_pred, (list, tuple, dict)):
            if multi:
                if len(losses) != 1:
                    raise ValueError(
                        "Argument `loss` must be a single loss for a model with a single "
                        f"output. Received: loss with {len(losses)} entries")
                only = next(iter(losses.values())) if isinstance(losses, dict) else losses[0]
            else:
                only = single
            if isinstance(y, (list, tuple)) and len(y) == 1:
                y = y[0]
            if isinstance(y, dict) and len(y) == 1:
                y = next(iter(y.values()))
            total = ops.cast(only(y, y_pred, sample_weight=sample_weight), "float32")
        else:
            outputs = _flat_outputs(model, y_pred)
            n = len(outputs)
            total = ops.zeros((), "float32")
            for i, (key, pred) in enumerate(outputs):
                loss_fn = _pick(losses, key, i, "loss", n) if multi else single
                if loss_fn is None:
                    continue
                target = _pick(y, key, i, "y", n)
                weight = (None if sample_weight is None
                          else _pick(sample_weight, key, i, "sample_weight", n))
                total = total + ops.cast(loss_fn(target, pred, sample_weight=weight), "float32")
        for extra in model.losses:  # add_loss terms and weight regularization, as in fit
            total = total + ops.cast(ops.sum(extra), "float32")
        return total

    return fn


def _compiled(model: keras.Model, x: Any, y: Any, y_pred: Any, sample_weight: Any) -> Any:
    # The method fit's train_step calls: compiled losses, loss_weights, sample_weight and
    # every add_loss/regularization term, exactly as in training.
    return ops.cast(model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight),
                    "float32")


def make_objective(model: keras.Model, loss: Any) -> Objective:
    """The loss to differentiate: ``loss`` if given, else what ``fit`` minimises.

    Args:
        model: The model examined.
        loss: None for the compiled loss (with its ``loss_weights``, plus ``add_loss`` terms);
            or a Keras loss name, a ``keras.losses.Loss``, a callable ``(y_true, y_pred)``; or a
            list (by output position) or dict (by output name) of those for a multi-output
            model (an entry None leaves that output out). ``add_loss`` and regularization
            terms are always added, as in ``fit``.

    Returns:
        An :class:`Objective`.

    Raises:
        ValueError: ``loss`` is None and the model is not compiled, or an unknown loss name.
        TypeError: ``loss`` (or an entry) is neither a name, a Loss nor a callable.
    """
    if loss is None:
        if not getattr(model, "compiled", False):
            raise ValueError(
                "Argument `loss` is required: the model is not compiled with a loss. Pass a "
                "Keras loss name or object, e.g. loss='sparse_categorical_crossentropy'. "
                "Received: loss=None")
        return Objective(_compiled, ("compiled",), compiled=True)
    if isinstance(loss, (list, tuple, dict)) and not loss:
        raise ValueError(f"Argument `loss` is an empty {type(loss).__name__}. Received: loss={loss!r}")
    key = (("loss", _key_of(loss)),)
    return Objective(_explicit(loss), key, compiled=False)


def _key_of(loss: Any) -> Any:
    if isinstance(loss, dict):
        return tuple((k, _key_of(v)) for k, v in loss.items())
    if isinstance(loss, (list, tuple)):
        return tuple(_key_of(v) for v in loss)
    if isinstance(loss, str) or loss is None:
        return loss
    if isinstance(loss, keras.losses.Loss) and type(loss).__module__.startswith("keras."):
        # Equal configs compute the same loss: a fresh Loss object per call (common in
        # notebooks) reuses the traced step instead of tracing a new one.
        try:
            return (type(loss), repr(sorted(loss.get_config().items())))
        except (NotImplementedError, TypeError, AttributeError):
            return id(loss)
    return id(loss)

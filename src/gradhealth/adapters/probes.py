"""Extra gradient measurements that need backend autodiff: the gradient through time.

Parameter gradients of a recurrent layer sum over timesteps, so a network that cannot carry a
signal from the first timestep to the loss still gets healthy-looking parameter gradients
(Bengio, Simard & Frasconi 1994). What shows it is the gradient of the loss with respect to the
recurrent layer's input at each timestep, ``dL/dx_t``: a product of ``T - t`` recurrent
Jacobians that decays (or grows) geometrically with the distance in time (Pascanu, Mikolov &
Bengio 2013, sec. 2). :func:`sequence_input_gradient` computes it in one backward pass.

The model is split at the recurrent layer's input into a *feed* (model inputs -> sequence) and a
*head* (sequence -> model output), two functional models over the same layers and variables,
cached per model. Both run with ``training=False``: dropout is off and no state (batch-norm
statistics, RNG) changes, so the probe never alters the model it examines.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

__all__ = ["sequence_input_gradient", "split_at"]

_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def split_at(model: keras.Model, layer: keras.layers.Layer
             ) -> tuple[keras.Model, keras.Model] | None:
    """``(feed, head)`` functional models that split ``model`` at ``layer``'s input, or None.

    None when the model is not a functional graph in which ``layer`` is called once, or when
    the output depends on anything but ``layer``'s input (e.g. a skip connection around it).
    """
    per_model = _SPLITS.setdefault(model, {})
    key = id(layer)
    if key not in per_model:
        try:
            tensor = layer.input
            if isinstance(tensor, (list, tuple)) or not model.inputs:
                per_model[key] = None
            else:
                inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
                outputs = model.outputs[0] if len(model.outputs) == 1 else model.outputs
                feed = keras.Model(inputs, tensor, name=f"{model.name}_feed")
                head = keras.Model(tensor, outputs, name=f"{model.name}_head")
                per_model[key] = (feed, head)
        except (AttributeError, ValueError, TypeError, KeyError, RuntimeError):
            per_model[key] = None
    return per_model[key]


def _mean_loss(loss_fn: Callable, y: Any, y_pred: Any) -> Any:
    if isinstance(y_pred, (list, tuple)) and len(y_pred) == 1:
        y_pred = y_pred[0]
    return keras.ops.mean(loss_fn(y, y_pred))


def sequence_input_gradient(model: keras.Model, layer: keras.layers.Layer, x: Any, y: Any,
                            loss_fn: Callable) -> np.ndarray | None:
    """The gradient of the mean loss with respect to ``layer``'s input sequence.

    Args:
        model: A functional or Sequential Keras model.
        layer: A layer of ``model`` whose input is a ``(batch, time, features)`` sequence (a
            recurrent layer or a ``Bidirectional`` wrapper).
        x: The input batch.
        y: The targets.
        loss_fn: A Keras loss callable ``(y_true, y_pred) -> per-example loss``.

    Returns:
        ``dL/dh`` as a float32 NumPy array of the sequence's shape, or None when the model
        cannot be split at ``layer`` (see :func:`split_at`).

    References:
        Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural
        networks", ICML (sec. 2: the gradient reaching step t is a product of T - t Jacobians).
    """
    parts = split_at(model, layer)
    if parts is None:
        return None
    feed, head = parts
    h = keras.ops.convert_to_numpy(feed(x, training=False))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # lazy: only the active backend is installed/imported

        ht = tf.constant(h)
        with tf.GradientTape() as tape:
            tape.watch(ht)
            loss = _mean_loss(loss_fn, y, head(ht, training=False))
        grad = tape.gradient(loss, ht)
        return None if grad is None else grad.numpy()
    if backend == "jax":
        import jax  # lazy: only the active backend is installed/imported

        trainable = [v.value for v in head.trainable_variables]
        non_trainable = [v.value for v in head.non_trainable_variables]

        def loss_of(seq: Any) -> Any:
            y_pred, _ = head.stateless_call(trainable, non_trainable, seq, training=False)
            return _mean_loss(loss_fn, y, y_pred)

        return np.asarray(jax.grad(loss_of)(jax.numpy.asarray(h)))
    import torch  # lazy: only the active backend is installed/imported

    ht = torch.tensor(h, requires_grad=True)
    with torch.enable_grad():
        loss = _mean_loss(loss_fn, keras.ops.convert_to_tensor(y), head(ht, training=False))
        (grad,) = torch.autograd.grad(loss, ht, allow_unused=True)
    return None if grad is None else grad.detach().cpu().numpy()

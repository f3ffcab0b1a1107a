"""Small helpers around ``fit`` for the library's own training loops (treat, the course).

Both avoid a TensorFlow trace that a short run never earns back.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

__all__ = ["build_metrics", "build_optimizer", "evaluate_eagerly"]


def build_optimizer(model: Any) -> None:
    """Create a compiled model's optimizer variables now, before ``fit``.

    Without a distribution strategy, Keras' TensorFlow trainer defers building the optimizer to
    the first trace of the train step: every slot variable is then created inside the trace
    (each behind a lifted initializer ``cond``) and the step is traced a second time. For an
    8-layer MLP with Adam that was 5 s of a 9 s ``fit``. Building first is what Keras does on
    the other backends.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


def build_metrics(model: Any, x: Any, y: Any) -> None:
    """Create a compiled model's metric variables now, in one eager pass on ``x, y``, before
    ``fit``.

    The same trace as :func:`build_optimizer` avoids, for metrics: without a distribution
    strategy, Keras' TensorFlow trainer builds ``metrics=["accuracy"]`` (choosing the sparse,
    categorical or binary accuracy from the data) inside the first trace of the train step, and
    a ``tf.function`` that creates variables while it is traced is traced a second time. For
    notebook 6's 8-layer ``robust_mlp`` that second trace was 2-3 s of a 5-6 s ``fit``. The
    metric state is reset afterwards (``fit`` resets it again at every epoch), so training and
    its history are unchanged.
    """
    model.compute_metrics(x, y, model(x, training=False))
    model.reset_metrics()


def evaluate_eagerly(model: Any, x: Any, y: Any, loss: Any) -> tuple[float, float]:
    """``(mean loss, accuracy)`` of a classifier with logit outputs, in one eager forward pass.

    ``model.evaluate`` traces a test function (and on JAX compiles it) for a single use.
    """
    pred = model(x, training=False)
    value = float(keras.ops.convert_to_numpy(keras.ops.mean(loss(y, pred))))
    labels = np.asarray(y).reshape(-1)
    accuracy = float(np.mean(np.argmax(keras.ops.convert_to_numpy(pred), axis=-1) == labels))
    return value, accuracy

"""TensorFlow adapter: ``tf.GradientTape``, eagerly on a model's first passes, then in one
cached ``tf.function`` per model and loss.

Under a ``tf.distribute`` strategy scope (``MirroredStrategy``, ``MultiWorkerMirroredStrategy``)
the step runs outside the strategy's cross-replica context, on the global batch and one device:
Keras losses divide by the number of replicas inside a scope (each replica's share of a
gradient that is summed later) and mirrored variables refuse a tape outside ``strategy.run``,
whereas a checkup wants the gradient of the whole batch, the same numbers as on one device.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from gradhealth.adapters._state import state_variables

__all__ = ["EAGER_CALLS", "USER_ERRORS", "build_step", "run"]

EAGER_CALLS: int = 2
"""How many probe passes of a model run eagerly before its step is compiled (``tf.function``)."""

# Errors that mean the data or loss do not fit the model (reported as ValueError).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, IndexError,
                                                tf.errors.InvalidArgumentError)


class _QuietRetracing(logging.Filter):
    """Drops TensorFlow's warnings while a probe step runs.

    Each model gets its own ``tf.function``; TF warns about "retracing" once several exist,
    which is expected here (one trace per model and input signature). A filter with a
    thread-local switch costs nothing per call, where setting the logger's level each call
    cleared the logging module's cache (0.3 ms a checkup).
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    @property
    def active(self) -> bool:
        return getattr(self._local, "active", False)

    @active.setter
    def active(self, value: bool) -> None:
        self._local.active = value

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not self.active


_QUIET = _QuietRetracing()
logging.getLogger("tensorflow").addFilter(_QUIET)


CONCRETE_MAX: int = 16
"""Input signatures whose concrete function a model's probe step keeps (:func:`_signature`)."""


class _Uncacheable(Exception):
    """An argument :func:`_signature` does not describe; the call goes through ``tf.function``."""


def _signature(obj: Any) -> Any:
    """A hashable description of a probe call's arguments: their nesting, and each array's
    shape and dtype (the values of Python scalars, which a ``tf.function`` bakes in).

    Arguments with the same description bind to the same concrete function, so the step can
    call it directly: ``tf.function``'s own dispatch (canonicalizing the arguments, looking up
    its cache) was 0.3-0.6 ms of a 3.5-4.1 ms call for a 30-layer MLP on a 2-core CPU.

    Raises:
        _Uncacheable: For anything but None, arrays and tensors, Python scalars and strings,
            and lists, tuples and dicts of those.
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return (type(obj), obj)
    if isinstance(obj, (np.ndarray, tf.Tensor)):
        return (type(obj), tuple(obj.shape), str(obj.dtype))
    if type(obj) in (list, tuple):
        return (type(obj), tuple(_signature(o) for o in obj))
    if type(obj) is dict:
        try:
            items = sorted(obj.items())
        except TypeError as e:  # keys of mixed types
            raise _Uncacheable from e
        return (dict, tuple((k, _signature(v)) for k, v in items))
    raise _Uncacheable


def _dense(g: Any) -> Any:
    # Embedding gradients arrive as IndexedSlices; statistics need the dense tensor.
    return tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g


def build_step(model: keras.Model, objective: Any, reduce: Callable | None,
               accepts_training: bool) -> Callable:
    """The compiled probe step of ``model`` (see :func:`gradhealth.adapters.probe`)."""
    trainable = list(model.trainable_variables)
    state = state_variables(model, include_metrics=True)
    connected: list[bool] = []

    def body(x, y, sample_weight, scale):
        if not tf.executing_eagerly():
            wrapper.traces += 1
        # Batch-norm statistics, RNG and metric state are restored inside the graph, in the
        # same call (automatic control dependencies keep program order).
        saved = [tf.identity(v.value) for v in state]
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True) if accepts_training else model(x)
            loss = tf.cast(objective.fn(model, x, y, y_pred, sample_weight), tf.float32)
            # scale is None for the usual unscaled pass: no multiply, no per-gradient divide.
            scaled = loss if scale is None else loss * scale
        grads = tape.gradient(scaled, trainable)
        connected[:] = [g is not None for g in grads]
        weights = [tf.identity(v.value) for v in trainable]
        grads = [tf.zeros_like(w, dtype=tf.float32) if g is None
                 else tf.cast(_dense(g), tf.float32) if scale is None
                 else tf.cast(_dense(g), tf.float32) / scale
                 for g, w in zip(grads, weights, strict=True)]
        with tf.control_dependencies([*grads, loss]):
            for v, value in zip(state, saved, strict=True):
                v.assign(value)
        if reduce is not None:
            return loss, reduce(grads, weights)
        return loss, (grads, weights)

    # Without AutoGraph: converting the model's and the statistics' Python code (150 functions
    # for a 50-layer MLP) took 4 s of a 6.5 s first checkup. Nothing is lost: Keras 3 does not
    # convert layer calls either (a model branching in Python on a tensor fails in fit too).
    traced = tf.function(body, reduce_retracing=True, autograph=False)
    concrete: dict[Any, Any] = {}

    def compiled(*args):
        # The concrete function of these arguments' signature, called directly (see
        # `_signature`); tracing happens in `get_concrete_function` as it would in the call.
        try:
            key = _signature(args)
        except _Uncacheable:
            return traced(*args)
        fn = concrete.get(key)
        if fn is None:
            if len(concrete) >= CONCRETE_MAX:
                concrete.clear()
            fn = concrete[key] = traced.get_concrete_function(*args)
        return fn(*args)

    def step(*args):
        # The first calls run eagerly: tracing and optimizing a graph costs 20-100 times one
        # eager pass (a 50-block residual MLP: 9 s against 0.3 s), which a model checked once
        # or twice (before and after training, as in a notebook or `treat`) never earns back.
        wrapper.calls += 1
        return body(*args) if wrapper.calls <= EAGER_CALLS else compiled(*args)

    def wrapper(x, y, sample_weight, scale):
        _QUIET.active = True
        try:
            loss, payload = step(x, y, sample_weight, None if float(scale) == 1.0 else scale)
        finally:
            _QUIET.active = False
        if reduce is not None:
            payload = payload.numpy()
        else:
            payload = ([g.numpy() for g in payload[0]], [w.numpy() for w in payload[1]])
        return float(loss.numpy()), payload, list(connected)

    wrapper.traces = 0
    wrapper.calls = 0
    return wrapper


_OUTSIDE = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="gradhealth-probe")


def run(model: keras.Model, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` outside any ``tf.distribute`` strategy scope (see the module docstring).

    A strategy scope is thread-local, so a worker thread runs with the default strategy; with
    no strategy in scope ``fn`` runs here directly.
    """
    if not tf.distribute.has_strategy():
        return fn()
    if tf.distribute.in_cross_replica_context():
        return _OUTSIDE.submit(fn).result()
    raise ValueError(
        f"A checkup of model {model.name!r} cannot run inside `strategy.run` (replica "
        "context): call it under `strategy.scope()` or outside it. Received: a call in "
        "replica context")

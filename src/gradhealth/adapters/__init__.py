"""Backend adapters: the only code in gradhealth that knows TensorFlow, JAX or torch.

:func:`probe` runs one forward and backward pass of a model on one batch, compiled at most once
per model (TensorFlow: eagerly on the first two passes, then ``tf.function``; JAX:
``jax.jit``; torch: eagerly), and returns either the per-variable statistics reduced **on the
device** (``reduce``: only ``(n_variables, k)`` numbers reach the host) or the gradients
themselves. The pass is the one ``fit`` makes: ``training=True`` when
``model.call`` accepts it, the loss given by an objective written with ``keras.ops`` (compiled
loss, ``loss_weights``, ``sample_weight``, ``add_loss``). Non-trainable state (batch-norm
moving statistics, seed generators) and metric variables are left exactly as they were, so a
checkup never changes the model it examines.

Each backend module exposes ``build_step(model, objective, reduce, accepts_training)`` returning
``step(x, y, sample_weight, scale) -> (loss, payload, connected)``, ``run(model, fn)`` (the
context a step runs in), and ``USER_ERRORS``, the backend exceptions that mean the data do not
fit the model.
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import keras
import numpy as np

from gradhealth.adapters._state import preserved_non_trainable_state
from gradhealth.adapters.keras_compat import compiled_loss_object, walk_layers

__all__ = ["FLOAT16_LOSS_SCALE", "ProbeResult", "get_adapter", "probe", "trace_count",
           "uses_float16"]

_ADAPTERS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}

FLOAT16_LOSS_SCALE: float = 2.0**15
"""Loss scale for models computing in float16 (``mixed_float16``).

float16's smallest normal is 6e-5 (subnormals reach 6e-8): backpropagated activations'
gradients below that flush to zero, a false "vanishing" finding. Training multiplies the loss by
a scale first (Micikevicius et al. 2018, "Mixed Precision Training"); 2**15 is the initial scale
of Keras' ``LossScaleOptimizer``. The gradients of the float32 variables are divided by it
again in float32 (a power of two: exact). If the scaled pass overflows to inf/NaN, the batch is
run again unscaled, so a reported non-finite gradient is a real one.
"""

Reduce = Callable[[Sequence[Any], Sequence[Any]], Any]

_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PREBUILT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_adapter(backend: str | None = None) -> ModuleType:
    """Return the adapter module for ``backend`` (default: the active Keras backend)."""
    name = backend or keras.backend.backend()
    if name not in _ADAPTERS:
        raise ValueError(
            f"gradhealth supports the Keras backends {sorted(_ADAPTERS)}. Received: backend={name!r}"
        )
    return importlib.import_module(f"gradhealth.adapters.{_ADAPTERS[name]}_adapter")


@dataclass
class ProbeResult:
    """What one probe pass returns (NumPy on the host).

    Attributes:
        loss: The batch loss (unscaled).
        payload: ``reduce(grads, weights)`` as a NumPy array, or, without ``reduce``, a pair
            ``(grads, weights)`` of lists of NumPy arrays in ``model.trainable_variables`` order.
        connected: Per variable, whether the loss depends on it (JAX cannot tell: all True).
        loss_scale: The loss scale the reported gradients were computed with (1.0 or
            :data:`FLOAT16_LOSS_SCALE`).
        variables: The trainable variables the rows of ``payload`` belong to, in order (read
            once per probe: walking a model's layers for them costs ~0.2 ms each time).
    """

    loss: float
    payload: Any
    connected: list[bool]
    loss_scale: float
    variables: list[Any] = field(default_factory=list)


def uses_float16(model: keras.Model) -> bool:
    """Whether any layer of ``model`` computes in float16 (e.g. under ``mixed_float16``)."""
    layers = [model, *walk_layers(model)]
    return any(getattr(layer, "compute_dtype", None) == "float16" for layer in layers)


def trace_count(model: keras.Model) -> int:
    """How many times the probe steps of ``model`` were traced (or built, on torch).

    A second checkup of the same model on a batch of the same shapes must not add to it.
    """
    return sum(getattr(step, "traces", 0) for step in _STEPS.get(model, {}).values())


def _slice(batch: Any) -> Any:
    return keras.tree.map_structure(lambda a: a[:1], batch)


def _prebuild(model: keras.Model, objective: Any, x: Any, y: Any, sw: Any,
              accepts_training: bool) -> None:
    """Run the compiled loss once eagerly on one example so that Keras builds its state.

    ``model.compute_loss`` builds the compiled loss (and its per-output trackers) on first
    use; building creates Keras variables, which cannot happen inside ``jax.jit`` or twice in a
    ``tf.function``. ``fit`` builds it symbolically before its first step for the same reason.
    """
    compiled = compiled_loss_object(model)
    if not objective.compiled or _PREBUILT.get(model) == id(compiled):
        return
    with preserved_non_trainable_state(model, include_metrics=True):
        x1 = _slice(x)
        y_pred = model(x1, training=False) if accepts_training else model(x1)
        objective.fn(model, x1, None if y is None else _slice(y), y_pred,
                     None if sw is None else _slice(sw))
    _PREBUILT[model] = id(compiled)


def _finite(result: ProbeResult, reduce: Reduce | None, nonfinite_column: int | None) -> bool:
    if not np.isfinite(result.loss):
        return False
    if reduce is None:
        return all(np.isfinite(g).all() for g in result.payload[0] if g is not None)
    if nonfinite_column is None:
        return bool(np.isfinite(result.payload).all())
    return not np.any(result.payload[:, nonfinite_column] > 0)


_LAYER = keras.layers.Layer


def _variables(model: keras.Model) -> tuple[list[Any], list[Any]]:
    """``(model.trainable_variables, model.variables)`` from one walk over the layers.

    Keras' ``trainable_variables`` and ``non_trainable_variables`` each walk every layer again
    (0.1-0.2 ms apiece for a 30-layer MLP, in a checkup of 5 ms); this is their definition,
    used unless the model's class overrides them.
    """
    cls = type(model)
    if (cls.trainable_variables is not _LAYER.trainable_variables
            or cls.variables is not _LAYER.variables):
        return list(model.trainable_variables), list(model.variables)
    variables = model.variables
    return ([v for v in variables if v.trainable] if model.trainable else []), variables


def probe(model: keras.Model, objective: Any, x: Any, y: Any, sample_weight: Any,
          reduce: Reduce | None, accepts_training: bool,
          nonfinite_column: int | None = None) -> ProbeResult:
    """One forward/backward pass on one batch, compiled at most once per model and loss.

    TensorFlow runs a model's first two passes eagerly and compiles on the third (a model
    checked once or twice never pays for a trace); JAX compiles on the first; torch runs
    eagerly.

    Args:
        model: A built Keras model.
        objective: An object with ``fn(model, x, y, y_pred, sample_weight) -> loss``, a
            hashable ``key`` and ``compiled`` (see :mod:`gradhealth.ops.objective`).
        x, y, sample_weight: One checked batch (NumPy leaves; ``y``/``sample_weight`` may be None).
        reduce: ``reduce(grads, weights) -> (n_variables, k)`` tensor computed on the device
            inside the compiled step (e.g. :func:`gradhealth.ops.stats.device_stats`), or None
            to bring the gradients themselves to the host.
        accepts_training: Whether ``model.call`` takes ``training`` (passed only then).
        nonfinite_column: Column of ``reduce``'s output counting non-finite entries, used to
            tell a float16 overflow caused by the loss scale from a real one.

    Returns:
        A :class:`ProbeResult`.

    Raises:
        The adapter's ``USER_ERRORS`` when the data or loss do not fit the model (the caller
        turns them into a ValueError naming the arguments).
    """
    adapter = get_adapter()
    steps = _STEPS.setdefault(model, {})
    compiled = id(compiled_loss_object(model)) if objective.compiled else None
    trainable, variables = _variables(model)
    key = (objective.key, compiled, reduce, accepts_training,
           tuple(id(v) for v in trainable), tuple(id(v) for v in variables))
    if key not in steps:
        steps[key] = adapter.build_step(model, objective, reduce, accepts_training)
        # Layers' dtype policies are fixed when they are created: decided once per step.
        steps[key].loss_scale = FLOAT16_LOSS_SCALE if uses_float16(model) else 1.0
    step = steps[key]
    scale = step.loss_scale

    def run() -> ProbeResult:
        _prebuild(model, objective, x, y, sample_weight, accepts_training)
        loss, payload, connected = step(x, y, sample_weight, np.asarray(scale, np.float32))
        result = ProbeResult(loss, payload, connected, scale, trainable)
        if scale != 1.0 and not _finite(result, reduce, nonfinite_column):
            loss, payload, connected = step(x, y, sample_weight, np.asarray(1.0, np.float32))
            result = ProbeResult(loss, payload, connected, 1.0, trainable)
        return result

    return adapter.run(model, run)

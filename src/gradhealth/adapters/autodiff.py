"""Backend autodiff for plain functions: elementwise derivatives and compiled value-and-grad.

The other adapters differentiate a Keras *model's* loss with respect to its variables. The
activation catalog and the experiment grid need two smaller things, written here once per
backend so no other module imports TensorFlow, JAX or torch:

- :func:`derivative`: ``f'(x)`` of an elementwise function, by reverse-mode autodiff of
  ``sum(f(x))`` (for an elementwise ``f`` the gradient of the sum is the derivative).
- :func:`value_and_grad`: wrap ``fn(params, *args) -> (loss, aux)`` written with ``keras.ops``
  into ``step(params, *args) -> (loss, aux, grads)`` returning NumPy arrays, compiled with
  ``tf.function`` (TensorFlow) or ``jax.jit`` (JAX). torch runs eagerly: ``torch.compile`` costs
  tens of seconds per graph on CPU, more than the sweeps it would speed up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

__all__ = ["compiled", "derivative", "evaluate", "float64_scope", "repeated", "value_and_grad"]

# jitted JAX derivatives, one per function: jax.grad outside jit re-traces on every call.
_JAX_DERIVATIVES: dict[Callable, Callable] = {}

Step = Callable[..., tuple[float, list[np.ndarray], list[np.ndarray]]]


def _backend(backend: str | None) -> str:
    name = backend or keras.backend.backend()
    if name not in ("tensorflow", "jax", "torch"):
        raise ValueError(
            "gradhealth supports the Keras backends ['jax', 'tensorflow', 'torch']. "
            f"Received: backend={name!r}"
        )
    return name


def float64_scope(backend: str | None = None) -> contextlib.AbstractContextManager:
    """A context in which the backend computes in float64.

    JAX silently computes in float32 unless 64-bit mode is on; ``jax.enable_x64`` turns it on
    for the ``with`` block only. TensorFlow and torch honour float64 inputs as they are.
    """
    if _backend(backend) == "jax":
        import jax  # lazy: only the active backend is installed/imported

        return jax.enable_x64(True)
    return contextlib.nullcontext()


def evaluate(fn: Callable[[Any], Any], x: np.ndarray, dtype: str = "float64",
             backend: str | None = None) -> np.ndarray:
    """``fn(x)`` computed by the backend in ``dtype``, returned as a float64 NumPy array."""
    with float64_scope(backend) if dtype == "float64" else contextlib.nullcontext():
        out = fn(keras.ops.convert_to_tensor(np.asarray(x, dtype=dtype), dtype=dtype))
        return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)


def derivative(fn: Callable[[Any], Any], x: np.ndarray, dtype: str = "float64",
               backend: str | None = None) -> np.ndarray:
    """The derivative of an elementwise function at each entry of ``x``, by autodiff.

    Args:
        fn: An elementwise function of a backend tensor written with ``keras.ops`` or a
            ``keras.activations`` function.
        x: Points (any shape) at which to differentiate.
        dtype: Precision of the computation. float64 (default) because float32 cannot resolve
            some closed forms to 1e-6: mish' contains 1 - tanh(softplus(x))^2, which loses
            about 1.5e-6 to cancellation in float32 near x = 4.
        backend: Backend name; defaults to the active Keras backend.

    Returns:
        A float64 NumPy array of ``fn'(x)`` with the shape of ``x``.
    """
    with float64_scope(backend) if dtype == "float64" else contextlib.nullcontext():
        return _derivative(fn, np.asarray(x, dtype=dtype), backend)


def _derivative(fn: Callable[[Any], Any], x32: np.ndarray, backend: str | None) -> np.ndarray:
    name = _backend(backend)
    if name == "tensorflow":
        import tensorflow as tf  # lazy: only the active backend is installed/imported

        xt = tf.constant(x32)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            total = tf.reduce_sum(fn(xt))
        grad = tape.gradient(total, xt)
        out = np.zeros_like(x32) if grad is None else grad.numpy()
    elif name == "jax":
        import jax  # lazy: only the active backend is installed/imported
        import jax.numpy as jnp  # lazy: only the active backend is installed/imported

        if fn not in _JAX_DERIVATIVES:
            _JAX_DERIVATIVES[fn] = jax.jit(jax.grad(lambda v: jnp.sum(fn(v))))
        out = np.asarray(_JAX_DERIVATIVES[fn](jnp.asarray(x32, dtype=x32.dtype)))
    else:
        import torch  # lazy: only the active backend is installed/imported

        xt = torch.tensor(x32, requires_grad=True)
        with torch.enable_grad():
            total = torch.sum(fn(xt))
            (grad,) = torch.autograd.grad(total, xt, allow_unused=True)
        out = np.zeros_like(x32) if grad is None else grad.detach().cpu().numpy()
    return np.asarray(out, dtype=np.float64)


def value_and_grad(fn: Callable[..., tuple[Any, Sequence[Any]]], compiled: bool = True,
                   backend: str | None = None) -> Step:
    """Compile ``fn(params, *args) -> (loss, aux)`` into a step returning NumPy arrays.

    ``params`` is a list of arrays (the differentiated arguments); ``args`` are further arrays
    held fixed. Calling the step again with arrays of the same shapes reuses the compiled graph,
    so one compiled step serves every initializer and seed of an architecture.

    Args:
        fn: The function, written with ``keras.ops``; ``aux`` is a list of tensors.
        compiled: Compile with ``tf.function``/``jax.jit`` (True) or run eagerly (False, for
            benchmarks and debugging). Ignored on torch, which always runs eagerly.
        backend: Backend name; defaults to the active Keras backend.

    Returns:
        ``step(params, *args) -> (loss: float, aux: list[np.ndarray], grads: list[np.ndarray])``.
    """
    name = _backend(backend)
    if name == "tensorflow":
        import tensorflow as tf  # lazy: only the active backend is installed/imported

        def tf_step(params, *args):
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss, aux = fn(params, *args)
            grads = tape.gradient(loss, params)
            grads = [tf.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
            return loss, list(aux), grads

        inner = (tf.function(tf_step, reduce_retracing=True, autograph=False) if compiled
                 else tf_step)

        def step(params, *args):
            loss, aux, grads = inner([tf.constant(np.asarray(p, np.float32)) for p in params],
                                     *[tf.constant(a) for a in args])
            return float(loss.numpy()), [a.numpy() for a in aux], [g.numpy() for g in grads]

        return step
    if name == "jax":
        import jax  # lazy: only the active backend is installed/imported
        import jax.numpy as jnp  # lazy: only the active backend is installed/imported

        inner = jax.value_and_grad(fn, has_aux=True)
        if compiled:
            inner = jax.jit(inner)

        def step(params, *args):
            (loss, aux), grads = inner([jnp.asarray(p, jnp.float32) for p in params],
                                       *[jnp.asarray(a) for a in args])
            return float(loss), [np.asarray(a) for a in aux], [np.asarray(g) for g in grads]

        return step

    import torch  # lazy: only the active backend is installed/imported

    def step(params, *args):
        tensors = [torch.tensor(np.asarray(p, np.float32), requires_grad=True) for p in params]
        fixed = [torch.as_tensor(np.asarray(a)) for a in args]
        with torch.enable_grad():
            loss, aux = fn(tensors, *fixed)
            grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads, strict=True)]
        return (float(loss.detach().cpu()), [a.detach().cpu().numpy() for a in aux],
                [g.detach().cpu().numpy() for g in grads])

    return step


def repeated(fn: Callable[..., Any], backend: str | None = None) -> Callable[..., Any]:
    """``fn``, which may assign Keras variables, compiled for a loop that calls it many times.

    TensorFlow: ``tf.function(fn)``, traced once per input signature (a Keras optimizer's
    ``apply_gradients`` runs inside one, as in ``fit``). Run eagerly, each of its operations is
    dispatched on its own: a clipped SGD step of a 6-layer MLP took 27 ms eagerly. JAX and
    torch: ``fn`` itself (``jax.jit`` cannot assign Keras variables; torch runs eagerly).

    Args:
        fn: A function of tensors written with ``keras.ops`` or Keras objects.
        backend: Backend name; defaults to the active Keras backend.

    Returns:
        A function with the same arguments; its results are backend tensors.

    Example:
        >>> update = repeated(lambda grads: optimizer.apply_gradients(zip(grads, variables)))
    """
    if _backend(backend) == "tensorflow":
        import tensorflow as tf  # lazy: only the active backend is installed/imported

        return tf.function(fn, autograph=False, reduce_retracing=True)
    return fn


def compiled(fn: Callable[..., Any], backend: str | None = None) -> Callable[..., Any]:
    """``fn``, a pure function of arrays, compiled where each eager operation costs a launch.

    JAX: ``jax.jit(fn)``, one program per input shape instead of one device launch per
    operation (on an H200 the checkup's embedding-row norm, eight eager operations, took
    3.8 ms, and 0.85 ms jitted). TensorFlow and torch: ``fn`` itself (a ``tf.function`` trace
    costs more than a few eager operations called once; torch runs eagerly). Keep the result:
    JAX's compiled programs live in it. For a function that assigns Keras variables, see
    :func:`repeated`.

    Args:
        fn: A function of arrays written with ``keras.ops``.
        backend: Backend name; defaults to the active Keras backend.

    Returns:
        A function with the same arguments and results.

    Example:
        >>> norm = compiled(lambda x: keras.ops.sqrt(keras.ops.sum(x * x)))
        >>> float(norm(np.ones(4, "float32")))
        2.0
    """
    if _backend(backend) == "jax":
        import jax  # lazy: only the active backend is installed/imported

        return jax.jit(fn)
    return fn

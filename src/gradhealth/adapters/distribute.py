"""Where gradients are summed across devices, and how a wrapper optimizer joins in.

Keras hands multi-device training to an engine per backend, and each sums the per-device
gradients at a different place:

* **TensorFlow** ``tf.distribute`` (``MirroredStrategy``, ``MultiWorkerMirroredStrategy``): every
  replica runs the train step on its slice of the global batch (Keras divides the loss by the
  number of replicas) and the optimizer sums the gradients across replicas inside ``apply``
  (``TFOptimizer._all_reduce_sum_gradients``). A wrapper that looked at the gradients it is
  handed would see one replica's share. :func:`all_reduce_sum` gives it the summed gradient
  first; :func:`hand_over` then passes the transformed gradient on so that the inner optimizer's
  own sum reproduces it exactly (replica 0 hands it over, the others hand over zeros); and
  :func:`cond_on_replicas` runs "apply or skip" where ``tf.distribute`` allows a ``merge_call``
  (outside a ``tf.cond`` in replica context), as Keras' ``LossScaleOptimizer`` does.
* **JAX** ``keras.distribution`` (``DataParallel``, ``ModelParallel``): the train step is one
  ``jit`` over global (sharded) arrays; XLA inserts the cross-device sums, so the gradients a
  wrapper receives are already the global ones and sharded variables are whole variables.
  Nothing to do here.
* **torch**: Keras has no torch distribution engine; see the README.

Every function is a no-op (identity, a plain conditional) outside a multi-replica
``tf.distribute`` replica context, so single-device training is unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from gradhealth.adapters.keras_compat import optimizer_distribution_strategy
from gradhealth.adapters.tf_graph import unlowered_cond

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
else:  # the other backends never reach the tf.distribute branches below
    tf = None

__all__ = ["all_reduce_sum", "cond_on_replicas", "hand_over", "replicas_in_sync",
           "summed_across_replicas", "variable_scope_like"]


def variable_scope_like(optimizer: keras.optimizers.Optimizer) -> contextlib.AbstractContextManager:
    """A context in which new variables are placed like ``optimizer``'s own.

    Under ``tf.distribute`` this is the scope of the strategy ``optimizer`` was created under
    (mirrored variables, one copy per replica); elsewhere, and outside any strategy, it does
    nothing.

    Args:
        optimizer: The optimizer whose placement to copy (a wrapper's inner optimizer).

    Returns:
        A context manager.
    """
    strategy = optimizer_distribution_strategy(optimizer)
    if tf is None or strategy is None or strategy is tf.distribute.get_strategy():
        return contextlib.nullcontext()
    return strategy.scope()


def replicas_in_sync() -> int:
    """Number of replicas whose gradients the optimizer will sum (1 outside ``tf.distribute``).

    Returns:
        ``strategy.num_replicas_in_sync`` inside a ``tf.distribute`` replica context, else 1
        (JAX ``keras.distribution`` and one device: gradients are already global).
    """
    if tf is None or not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return 1
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def summed_across_replicas() -> bool:
    """True where the gradients handed to an optimizer are one replica's share of a sum."""
    return replicas_in_sync() > 1


def all_reduce_sum(grads: list[Any]) -> list[Any]:
    """The gradients summed over replicas, ``None`` entries kept (identity on one replica).

    This is the sum Keras' TensorFlow optimizer takes before applying an update, so the result
    is the applied gradient of the global batch (``IndexedSlices`` from embeddings included).

    Args:
        grads: One replica's gradients, in variable order; ``None`` where there is none.

    Returns:
        The summed gradients, identical on every replica.
    """
    if not summed_across_replicas():
        return list(grads)
    present = [g for g in grads if g is not None]
    if not present:
        return list(grads)
    reduced = iter(tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, present))
    return [None if g is None else next(reduced) for g in grads]


def _zeros_like(g: Any) -> Any:
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(tf.zeros_like(g.values), g.indices, g.dense_shape)
    return tf.zeros_like(g)


def hand_over(grads: list[Any]) -> list[Any]:
    """This replica's share of ``grads`` (already summed) for an optimizer that sums again.

    The inner optimizer sums what every replica hands it; replica 0 hands over the summed
    gradient and the others zeros, so that sum is the summed gradient bit for bit (``x + 0 ==
    x`` in floating point, for any number of replicas; NaN/inf kept as they are).

    Args:
        grads: Gradients identical on every replica (the output of :func:`all_reduce_sum`,
            possibly transformed).

    Returns:
        The share to pass on (``grads`` itself outside ``tf.distribute``).
    """
    if not summed_across_replicas():
        return list(grads)
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    static = tf.get_static_value(replica)
    if static is not None:  # MirroredStrategy: the replica id is a constant of the graph
        return [g if g is None or static == 0 else _zeros_like(g) for g in grads]
    first = tf.equal(replica, 0)
    return [None if g is None else tf.cond(first, lambda g=g: g, lambda g=g: _zeros_like(g))
            for g in grads]


def cond_on_replicas(flag: Any, fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(*args)`` when the boolean scalar ``flag`` is true, on every replica together.

    ``flag`` must be the same on every replica (computed from summed gradients). A Keras
    optimizer's ``apply`` under ``MirroredStrategy`` calls ``merge_call``, which TensorFlow
    refuses inside a ``tf.cond`` in replica context; so, as Keras' ``LossScaleOptimizer`` does,
    the condition is taken in cross-replica context and ``fn`` runs on each replica from there.
    Strategies that need no ``merge_call`` (and one device) take a plain conditional, kept a
    function call on TensorFlow (:func:`gradhealth.adapters.tf_graph.unlowered_cond`).

    Args:
        flag: Boolean scalar tensor.
        fn: The update to run (returns nothing).
        *args: Its arguments (per-replica tensors, lists of them, variables).
    """
    if tf is None:
        ops.cond(flag, lambda: fn(*args), lambda: None)
        return
    if not summed_across_replicas() or (
            tf.__internal__.distribute.strategy_supports_no_merge_call()):
        # One function call rather than Switch/Merge around every tensor of the update:
        # about 1.01x instead of 1.04x an unmonitored step at every=100 (see `tf_graph`).
        unlowered_cond(flag, lambda: fn(*args), lambda: None)
        return

    def cross_replica(strategy: Any, flag: Any, *args: Any) -> None:
        first = strategy.experimental_local_results(flag)[0]

        def run() -> None:
            strategy.extended.call_for_each_replica(fn, args=args)

        tf.cond(first, run, lambda: None)

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(flag, *args))

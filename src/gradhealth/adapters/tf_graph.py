"""A TensorFlow graph conditional that runs as one function call.

Inside a ``tf.function`` TensorFlow lowers ``tf.cond`` to Switch/Merge operations placed in the
enclosing graph. The executor then visits every operation of the branch not taken too (marking
it dead), and every tensor the branches read passes through a Switch. :func:`unlowered_cond`
keeps the ``If`` operation a function call instead: only the branch taken runs, and its inputs
enter once.

Measured on a 2-core CPU (TensorFlow 2.21, the 20x256 MLP of ``benchmarks/monitor_overhead.py``,
paired ratios over 16 alternating rounds): the monitor's "skip a non-finite step" conditional
around Adam's update made a step at ``every=100`` 1.036-1.047x an unmonitored one lowered and
1.001-1.015x unlowered; the exact-statistics fallback, about a thousand operations never taken,
cost as much as the statistics themselves on every step while lowered.

Under XLA (``jit_compile=True``) the attribute is ignored: XLA compiles an ``If`` into its own
conditional either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    from tensorflow.core.framework import attr_value_pb2
else:  # only the TensorFlow backend calls into this module
    tf = attr_value_pb2 = None

__all__ = ["unlowered_cond"]

_IF_OPS = ("If", "StatelessIf")
_LOWER_ATTR = "_lower_using_switch_merge"


def unlowered_cond(pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> Any:
    """``tf.cond(pred, true_fn, false_fn)``, kept one ``If`` call inside a graph.

    A concrete predicate (a Python bool, an eager tensor) runs one branch in Python, as
    :func:`gradhealth.ops.control.cond` does.

    Args:
        pred: A boolean scalar: Python bool or tensor.
        true_fn: Called when ``pred`` is true.
        false_fn: Called when it is false; both return the same structure (or nothing).

    Returns:
        What the chosen branch returns (``tf.cond``'s result in a graph).
    """
    try:
        concrete = bool(pred)
    except TypeError:  # a symbolic tensor: branch in the graph
        graph = tf.compat.v1.get_default_graph()
        first_new = len(graph.get_operations())
        out = tf.cond(pred, true_fn, false_fn)
        # The If operation is created in this graph (its branches are functions of their own,
        # whose conditionals went through here themselves); a cond with no outputs returns no
        # tensor to find it by, so look at what the call added.
        for op in graph.get_operations()[first_new:]:
            if op.type in _IF_OPS:
                op._set_attr(_LOWER_ATTR,  # noqa: SLF001 - TensorFlow has no public switch
                             attr_value_pb2.AttrValue(b=False))
        return out
    return true_fn() if concrete else false_fn()

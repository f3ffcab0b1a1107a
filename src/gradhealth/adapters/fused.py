"""Fused kernels for the monitor's per-variable statistics, per backend.

The statistics of :mod:`gradhealth.ops.stats` are written once with ``keras.ops``; how they run
fast differs per backend:

* **JAX** trains inside ``jit``: XLA already fuses each pass into one loop per variable, so the
  ``keras.ops`` functions are used as they are. On a GPU or TPU the kernels are
  ``branch_free`` (:func:`branch_free`): a conditional there makes the device wait while the
  host reads its predicate, so the statistics always take the two exact passes and the guard is
  one ``all(isfinite)`` per gradient, with no conditional in the step.
* **TensorFlow** runs the ``keras.ops`` functions in its graph (on a GPU Keras compiles the
  step with XLA, which fuses them); sums of squares are ``tf.nn.l2_loss``, one kernel that
  reads the tensor once (``reduce_sum(x * x)`` writes ``x * x`` first: 0.95 against 1.45 ms for
  the core statistics of a 20x256 MLP on a 2-core CPU), and small variables of one shape are
  reduced together (:func:`gradhealth.ops.stats.direct_stats_grouped`): TensorFlow's CPU graph
  executor pays per operation. On a CPU an XLA-compiled stats function
  (``tf.function(jit_compile=True)``) was measured slower than the plain graph and took 5-10 s
  to compile per ``fit``, so it is not used. ``tf.IndexedSlices`` gradients (Embedding layers)
  are made dense first, so the statistics are those of the dense gradient.
* **torch**: Keras' torch backend runs the train step eagerly, so each per-variable
  ``keras.ops`` call is a Python call. :mod:`gradhealth.adapters.torch_kernels` computes the
  same numbers with multi-tensor ``torch._foreach_*`` kernels (one call over all variables).

:func:`stats_kernels` returns the six functions for the running backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras

from gradhealth.adapters.tf_graph import unlowered_cond

__all__ = ["BRANCH_FREE", "StatsKernels", "branch_free", "stats_kernels"]


@dataclass(frozen=True)
class StatsKernels:
    """The monitor's device passes (see :mod:`gradhealth.ops.stats` for their contracts)."""

    # (grads[, stats]) and (grads, weights, scan[, stats]): passed the statistics wanted, they
    # may compute more columns (``device_stats`` masks the others; torch's compute all).
    grad_scan: Callable[..., Any]
    scaled_sums: Callable[..., Any]
    grad_histograms: Callable[[list[Any], Any, int], Any]
    direct_stats: Callable[[list[Any], list[Any], tuple[str, ...]], Any]
    finite_guard: Callable[[list[Any]], Any]
    cond: Callable[[Any, Callable[[], Any], Callable[[], Any]], Any]
    branch_free: bool = False
    # Eager backends (torch) only: write a logged row into the rings and count a step, in place
    # (``torch_kernels.write_row`` and ``count_step``); None where the step is compiled.
    write_row: Callable[..., None] | None = None
    count_step: Callable[[Any, Any, Any, int], None] | None = None
    # Eager backends: a flag as a Python bool where reading it waits for nothing (the CPU).
    settle: Callable[[Any], Any] | None = None


BRANCH_FREE: bool | None = None
"""Force :func:`branch_free` on (True) or off (False) on JAX; None (default) decides by the
device. For tests and A/B measurements: it is read when kernels are made (a new optimizer) and
when a step is traced."""


def branch_free(backend: str | None = None) -> bool:
    """Whether the compiled step should hold no data-dependent conditional.

    True for JAX when its default device is an accelerator: XLA runs a conditional on a GPU by
    copying the predicate to the host and waiting for it, so the device idles in the middle of
    every step (on an H200, the monitor's cost on a d=512 transformer at ``every=1`` went from
    1.39x to 1.11x of a step without it). On a CPU the
    host and the device are the same, and the one-pass statistics with a rarely taken fallback
    are the faster choice.

    Args:
        backend: A Keras backend name (default: the running one).

    Returns:
        Whether :func:`stats_kernels` marks its kernels ``branch_free``.
    """
    name = backend or keras.backend.backend()
    if name != "jax":
        # torch runs eagerly (a Python branch); TensorFlow's GPU steps are not measured yet.
        return False
    if BRANCH_FREE is not None:
        return BRANCH_FREE
    import jax  # lazy: JAX backend only

    return jax.default_backend() != "cpu"


def _tf_dense(kernels: Any) -> StatsKernels:
    import tensorflow as tf  # lazy: only the TensorFlow backend needs it

    def dense(grads: list[Any]) -> list[Any]:
        out = []
        for g in grads:
            if isinstance(g, tf.IndexedSlices):
                shape = tf.get_static_value(g.dense_shape)
                g = tf.convert_to_tensor(g)
                if shape is not None:
                    g = tf.ensure_shape(g, [int(d) for d in shape])
            out.append(g)
        return out

    # Inside Keras' train function AutoGraph would convert these Python functions again on
    # every trace (seconds for a deep model); they hold no tensor-dependent control flow.
    plain = tf.autograph.experimental.do_not_convert
    cond = unlowered_cond
    return StatsKernels(
        grad_scan=plain(lambda grads, *stats: kernels.grad_scan(dense(grads), *stats)),
        scaled_sums=plain(lambda grads, weights, s, *stats: kernels.scaled_sums(
            dense(grads), weights, s, *stats)),
        grad_histograms=plain(lambda grads, s, buckets: kernels.grad_histograms(dense(grads), s,
                                                                                buckets)),
        direct_stats=plain(lambda grads, weights, stats: kernels.direct_stats_grouped(
            dense(grads), weights, stats, sum_squares=lambda x: 2.0 * tf.nn.l2_loss(x))),
        finite_guard=plain(lambda grads: kernels.finite_guard(dense(grads), cond=cond)),
        cond=cond,
    )


def stats_kernels(generic: Any, backend: str | None = None) -> Any:
    """The fastest implementation of ``generic`` (the ``keras.ops`` passes) on ``backend``.

    Args:
        generic: The ``keras.ops`` implementations: the :mod:`gradhealth.ops.stats` module
            (or any object with its six functions).
        backend: A Keras backend name (default: the running one).

    Returns:
        An object with the six functions: JAX: ``generic`` itself on a CPU, on an accelerator
        a ``branch_free`` :class:`StatsKernels` of its functions; TensorFlow: a
        :class:`StatsKernels` of the same functions on dense gradients; torch: a
        :class:`StatsKernels` of the ``torch._foreach`` kernels of
        :mod:`gradhealth.adapters.torch_kernels`.
    """
    name = backend or keras.backend.backend()
    if name == "tensorflow":
        return _tf_dense(generic)
    if name == "torch":
        torch_kernels = importlib.import_module("gradhealth.adapters.torch_kernels")
        return StatsKernels(grad_scan=torch_kernels.grad_scan,
                            scaled_sums=torch_kernels.scaled_sums,
                            grad_histograms=torch_kernels.grad_histograms,
                            direct_stats=torch_kernels.direct_stats,
                            finite_guard=torch_kernels.finite_guard,
                            cond=generic.cond, write_row=torch_kernels.write_row,
                            count_step=torch_kernels.count_step,
                            settle=torch_kernels.settled)
    if branch_free(name):
        return StatsKernels(grad_scan=generic.grad_scan, scaled_sums=generic.scaled_sums,
                            grad_histograms=generic.grad_histograms,
                            direct_stats=generic.direct_stats, finite_guard=generic.all_finite,
                            cond=generic.cond, branch_free=True)
    return generic

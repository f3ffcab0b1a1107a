"""TensorBoard event files written with TensorFlow's core summary ops.

The only place the monitor touches TensorFlow directly: event files are TensorFlow's format on
every Keras backend, so the monitor writes them through this module whatever backend trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["create_writer", "write_histogram_counts", "write_histograms", "write_scalars"]


def create_writer(log_dir: str | Path) -> Any:
    """A ``tf.summary`` file writer for ``log_dir``.

    Raises:
        ImportError: TensorFlow is not installed (it is a gradhealth dependency).
    """
    try:
        import tensorflow as tf  # lazy: only runs that ask for TensorBoard logs need it
    except ImportError as e:  # pragma: no cover - tensorflow is a gradhealth dependency
        raise ImportError(
            "Argument `log_dir` needs TensorFlow to write TensorBoard event files: "
            "pip install tensorflow-cpu (and tensorboard to view them).") from e
    return tf.summary.create_file_writer(str(log_dir))


def write_scalars(writer: Any, step: int, scalars: dict[str, float],
                  flush: bool = True) -> None:
    """Write TensorBoard scalars with TensorFlow's core summary op.

    ``tf.summary.scalar`` needs the ``tensorboard`` package installed; ``tf.summary.write`` with
    the scalar plugin's metadata writes the same events with TensorFlow alone.

    Args:
        writer: From :func:`create_writer`.
        step: The step the values belong to.
        scalars: Tag -> value.
        flush: Flush the event file afterwards (pass False when writing many steps at once
            and flush once at the end).
    """
    import tensorflow as tf  # lazy: see create_writer
    from tensorflow.core.framework import summary_pb2  # lazy: see create_writer

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    with writer.as_default(step=step):
        for tag, value in scalars.items():
            tf.summary.write(tag, tf.constant(float(value), dtype=tf.float32), step=step,
                             metadata=metadata)
    if flush:
        writer.flush()


def write_histograms(writer: Any, step: int, values: dict[str, np.ndarray],
                     buckets: int = 30) -> None:
    """Write TensorBoard histograms (the ``histograms`` plugin's format) with TensorFlow alone.

    Each histogram is a ``(buckets, 3)`` tensor of ``[left edge, right edge, count]``, the
    layout ``tf.summary.histogram`` writes, so TensorBoard and tbparse read it as a histogram.
    """
    import tensorflow as tf  # lazy: see create_writer
    from tensorflow.core.framework import summary_pb2  # lazy: see create_writer

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "histograms"
    with writer.as_default(step=step):
        for tag, data in values.items():
            data = np.asarray(data, dtype=np.float64).ravel()
            data = data[np.isfinite(data)]
            if data.size == 0:
                continue
            lo, hi = float(data.min()), float(data.max())
            if lo == hi:
                lo, hi = lo - 0.5, hi + 0.5
            counts, edges = np.histogram(data, bins=buckets, range=(lo, hi))
            tensor = np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)
            tf.summary.write(tag, tf.constant(tensor, dtype=tf.float64), step=step,
                             metadata=metadata)
    writer.flush()


def write_histogram_counts(writer: Any, step: int,
                           counts: dict[str, tuple[float, float, np.ndarray]],
                           flush: bool = True) -> None:
    """Write TensorBoard histograms from bucket counts already reduced (on the device).

    Args:
        writer: From :func:`create_writer`.
        step: The step the histograms belong to.
        counts: Tag -> ``(low, high, counts)``: ``len(counts)`` equal buckets over
            ``[low, high]``. A histogram with no finite range or no entries is left out.
        flush: Flush the event file afterwards.
    """
    import tensorflow as tf  # lazy: see create_writer
    from tensorflow.core.framework import summary_pb2  # lazy: see create_writer

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "histograms"
    with writer.as_default(step=step):
        for tag, (low, high, c) in counts.items():
            c = np.asarray(c, dtype=np.float64).ravel()
            low, high = float(low), float(high)
            if c.size == 0 or not (np.isfinite(low) and np.isfinite(high)) or c.sum() == 0:
                continue
            if low == high:
                low, high = low - 0.5, high + 0.5
            edges = np.linspace(low, high, c.size + 1)
            tensor = np.stack([edges[:-1], edges[1:], c], axis=1)
            tf.summary.write(tag, tf.constant(tensor, dtype=tf.float64), step=step,
                             metadata=metadata)
    if flush:
        writer.flush()

"""Course experiment: the same training under several clipping rules (notebook 3)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradhealth._internal.training import build_optimizer
from gradhealth.callbacks.monitor import GradientHealthMonitor, GradientHealthWarning
from gradhealth.optim.clipping import ClippingOptimizer

__all__ = ["compare_clipping"]


def compare_clipping(build_model: Callable[[], keras.Model], x: Any, y: Any,
                     make_optimizer: Callable[[], keras.optimizers.Optimizer],
                     loss: Any, methods: Mapping[str, Mapping[str, Any] | None],
                     epochs: int = 1, batch_size: int = 64) -> tuple[Any, Any]:
    """Train the same model from the same weights once per clipping rule and compare.

    Every run gets a fresh model from ``build_model`` (seed it for identical starting weights),
    a fresh optimizer from ``make_optimizer`` wrapped in a :class:`ClippingOptimizer` (or not,
    for a ``None`` entry), and a :class:`gradhealth.GradientHealthMonitor` that watches every
    step without interfering (``on_nonfinite="warn"``: NaN updates are applied, as they would
    be without the monitor).

    Args:
        build_model: Returns a new, uncompiled model.
        x: Training inputs.
        y: Training targets.
        make_optimizer: Returns a new optimizer.
        loss: Keras loss for ``compile``.
        methods: Run name -> ``ClippingOptimizer`` keyword arguments (including ``method``),
            or None for no clipping.
        epochs: Epochs per run.
        batch_size: Batch size (the data are not shuffled, so all runs see the same batches).

    Returns:
        ``(table, norms)``: a DataFrame with one row per run -- ``method``, ``final_loss``
        (Keras' training loss of the last step: the running mean over the epoch),
        ``loss_after`` (the loss of the trained weights on all of ``x, y``; NaN when they are
        not finite), ``steps_to_nan`` (first step whose loss or
        gradients are not finite; None if none), ``max_grad_norm`` (largest finite pre-clip
        global gradient norm) -- and a DataFrame of the pre-clip global norm per step
        (rows: steps, columns: runs).
    """
    rows, norms = [], {}
    for name, kwargs in methods.items():
        model = build_model()
        optimizer = make_optimizer()
        if kwargs is not None:
            optimizer = ClippingOptimizer(optimizer, **dict(kwargs))
        model.compile(optimizer=optimizer, loss=loss)
        build_optimizer(model)
        monitor = GradientHealthMonitor(on_nonfinite="warn")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GradientHealthWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0,
                      callbacks=[monitor])
        per_step = monitor.history.groupby("step").agg(
            loss=("loss", "first"), global_norm=("global_norm", "first"),
            nonfinite=("nonfinite_count", "sum"))
        bad = per_step.index[~np.isfinite(per_step["loss"]) | (per_step["nonfinite"] > 0)]
        finite_norms = per_step["global_norm"][np.isfinite(per_step["global_norm"])]
        after = _evaluate(model, x, y, loss)
        rows.append({"method": name, "final_loss": float(per_step["loss"].iloc[-1]),
                     "loss_after": after,
                     "steps_to_nan": int(bad.min()) if len(bad) else None,
                     "max_grad_norm": float(finite_norms.max()) if len(finite_norms) else
                     float("nan")})
        norms[name] = per_step["global_norm"]
    return pd.DataFrame(rows), pd.DataFrame(norms)


def _evaluate(model: keras.Model, x: Any, y: Any, loss: Any) -> float:
    """The trained model's loss on ``x, y`` (NaN when its weights or outputs are not finite).

    One eager forward pass: ``model.evaluate`` would trace a test function per run.
    """
    if not all(np.isfinite(w).all() for w in model.get_weights()):
        return float("nan")
    loss_fn = keras.losses.get(loss) if isinstance(loss, str) else loss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = keras.ops.convert_to_numpy(loss_fn(keras.ops.convert_to_tensor(y),
                                                    model(x, training=False)))
        return float(np.mean(values))

"""Course experiment: the same training under several clipping rules (notebook 3).

How the runs are trained: one gradient function, compiled once, serves every run (the runs
differ only in the optimizer, and the weights are its arguments, not captured variables), and
each run's optimizer applies the gradients eagerly. ``model.fit`` with a
:class:`gradhealth.GradientHealthMonitor` per run did the same arithmetic but traced a new train
step for every run, monitor statistics included: 14-16 s for notebook 3's six 12-step runs on
the 2-core CI machine, against about 4 s this way (measured; the eager optimizer updates are
most of it). Notebook 3 shows the monitor itself on the run without clipping, and checks that
this loop reproduces it (the same NaN step).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradhealth.adapters.autodiff import repeated, value_and_grad
from gradhealth.core.clipping import global_norm
from gradhealth.optim.clipping import ClippingOptimizer

__all__ = ["compare_clipping"]


def compare_clipping(build_model: Callable[[], keras.Model], x: Any, y: Any,
                     make_optimizer: Callable[[], keras.optimizers.Optimizer],
                     loss: Any, methods: Mapping[str, Mapping[str, Any] | None],
                     epochs: int = 1, batch_size: int = 64) -> tuple[Any, Any]:
    """Train the same model from the same weights once per clipping rule and compare.

    ``build_model`` is called once; every run starts from its initial weights, with a fresh
    optimizer from ``make_optimizer`` wrapped in a :class:`ClippingOptimizer` (or not, for a
    ``None`` entry), on the same batches in the same order (no shuffling). Every step is
    watched: the loss, the global norm of the gradients *before* clipping and their non-finite
    entries. Nothing interferes with the run: a step with NaN/inf gradients is applied, as plain
    ``model.fit`` would apply it. The arithmetic is ``fit``'s (mean loss over the batch plus the
    model's own losses, then ``optimizer.apply_gradients``); layers that update state in
    training (batch normalization's moving statistics) update it as in ``fit``.

    Args:
        build_model: Returns a new, uncompiled model.
        x: Training inputs.
        y: Training targets.
        make_optimizer: Returns a new optimizer.
        loss: Keras loss (name, function or ``keras.losses.Loss``).
        methods: Run name -> ``ClippingOptimizer`` keyword arguments (including ``method``),
            or None for no clipping.
        epochs: Epochs per run.
        batch_size: Batch size (the data are not shuffled, so all runs see the same batches).

    Returns:
        ``(table, norms)``: a DataFrame with one row per run -- ``method``, ``final_loss``
        (the training loss as Keras reports it after the last step: the running mean over the
        epoch), ``loss_after`` (the loss of the trained weights on all of ``x, y``; NaN when
        they are not finite), ``steps_to_nan`` (first step whose loss or gradients are not
        finite; None if none), ``max_grad_norm`` (largest finite pre-clip global gradient
        norm) -- and a DataFrame of the pre-clip global norm per step (rows: steps, columns:
        runs; NaN where the gradients are not finite).
    """
    model = build_model()
    if not model.built:
        model.build(np.shape(x))
    initial = model.get_weights()
    loss_fn = keras.losses.get(loss) if isinstance(loss, str) else loss
    trainable = list(model.trainable_variables)
    state = list(model.non_trainable_variables)
    n_state = len(state)

    def objective(params: list[Any], xb: Any, yb: Any, *state_values: Any
                  ) -> tuple[Any, list[Any]]:
        pred, new_state, losses = model.stateless_call(params, list(state_values), xb,
                                                       training=True, return_losses=True)
        value = keras.ops.mean(loss_fn(yb, pred))
        for extra in losses:
            value = value + extra
        return value, list(new_state)

    step = value_and_grad(objective)
    xs, ys = np.asarray(x), np.asarray(y)
    starts = range(0, len(xs), batch_size)

    rows, norms = [], {}
    for name, kwargs in methods.items():
        model.set_weights(initial)
        optimizer = make_optimizer()
        if kwargs is not None:
            optimizer = ClippingOptimizer(optimizer, **dict(kwargs))
        optimizer.build(trainable)
        update = repeated(lambda grads, opt=optimizer: opt.apply_gradients(
            zip(grads, trainable, strict=True)))
        losses, run_norms, nonfinite = [], [], []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for _ in range(epochs):
                total, seen = 0.0, 0
                for start in starts:
                    xb, yb = xs[start:start + batch_size], ys[start:start + batch_size]
                    value, new_state, grads = step(
                        [keras.ops.convert_to_numpy(v.value) for v in trainable], xb, yb,
                        *[keras.ops.convert_to_numpy(v.value) for v in state])
                    for variable, new in zip(state, new_state[:n_state], strict=True):
                        variable.assign(new)
                    total, seen = total + value * len(xb), seen + len(xb)
                    losses.append(total / seen)          # Keras' running mean of the epoch
                    bad = int(sum(np.count_nonzero(~np.isfinite(g)) for g in grads))
                    nonfinite.append(bad)
                    run_norms.append(math.nan if bad else global_norm(grads))
                    update([keras.ops.convert_to_tensor(g) for g in grads])
        per_step = pd.DataFrame({"loss": losses, "global_norm": run_norms,
                                 "nonfinite": nonfinite}).rename_axis("step")
        bad = per_step.index[~np.isfinite(per_step["loss"]) | (per_step["nonfinite"] > 0)]
        finite_norms = per_step["global_norm"][np.isfinite(per_step["global_norm"])]
        rows.append({"method": name, "final_loss": float(per_step["loss"].iloc[-1]),
                     "loss_after": _evaluate(model, x, y, loss_fn),
                     "steps_to_nan": int(bad.min()) if len(bad) else None,
                     "max_grad_norm": float(finite_norms.max()) if len(finite_norms) else
                     float("nan")})
        norms[name] = per_step["global_norm"]
    model.set_weights(initial)
    return pd.DataFrame(rows), pd.DataFrame(norms)


def _evaluate(model: keras.Model, x: Any, y: Any, loss_fn: Any) -> float:
    """The trained model's loss on ``x, y`` (NaN when its weights or outputs are not finite).

    One eager forward pass: ``model.evaluate`` would trace a test function per run.
    """
    if not all(np.isfinite(w).all() for w in model.get_weights()):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = keras.ops.convert_to_numpy(loss_fn(keras.ops.convert_to_tensor(y),
                                                    model(x, training=False)))
        return float(np.mean(values))

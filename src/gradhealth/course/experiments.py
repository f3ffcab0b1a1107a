"""Experiment harness: sweep activations x initializers x depths x seeds into one tidy table.

:func:`grid` runs a measurement for every configuration and returns one long DataFrame, ready
for ``groupby``/``pivot``/seaborn. The ``"gradient_flow"`` measurement compiles one
forward/backward probe per (activation, depth) (:func:`gradhealth.init.propagation.make_mlp_probe`:
``tf.function`` or ``jax.jit`` around a ``scan`` over the layers) and reuses it for every
initializer and seed, so a 4 x 4 x 4-depth grid of MLPs up to 50 layers deep runs in seconds
(``benchmarks/grid_speed.py`` prints the ratio to the same grid run eagerly).

Work is split into one task per (activation, depth) group; pass any
``concurrent.futures.Executor`` as ``executor=`` to run the groups in a thread or process pool
or on a cluster executor. Results are assembled in configuration order whatever order the
tasks finish in, so the table does not depend on the executor.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, as_completed
from typing import Any

import keras
import numpy as np
import pandas as pd
from rich.progress import Progress

from gradhealth._internal.training import build_optimizer, evaluate_eagerly
from gradhealth._internal.validation import check_positive_int
from gradhealth.core.thresholds import Thresholds
from gradhealth.data import load_digits_split
from gradhealth.init.activations import get_activation, resolve_name
from gradhealth.init.initializers import resolve_initializer_name
from gradhealth.init.propagation import default_batch, make_mlp_probe, mlp_params
from gradhealth.models import deep_mlp

__all__ = ["DEFAULT_ACTIVATIONS", "DEFAULT_DEPTHS", "DEFAULT_INITIALIZERS", "MEASURES",
           "TRAIN_BATCH", "TRAIN_EPOCHS", "grid", "run_group", "summarize"]

MEASURES: tuple[str, ...] = ("gradient_flow", "training")
#: Defaults of :func:`grid`: the four activations and initializers notebook 5 compares, and
#: depths from shallow to where sigmoid networks stop learning (notebook 1).
DEFAULT_ACTIVATIONS: tuple[str, ...] = ("sigmoid", "tanh", "relu", "selu")
DEFAULT_INITIALIZERS: tuple[str, ...] = ("glorot_uniform", "he_normal", "lecun_normal",
                                         "orthogonal")
DEFAULT_DEPTHS: tuple[int, ...] = (5, 10, 25, 50)
#: Training budget of the ``"training"`` measure: Adam (Kingma & Ba 2015) at Keras' default
#: learning rate 1e-3, mini-batches of 64 digits, 3 epochs (63 steps per epoch on the
#: 1348-image training split): enough to separate learning from non-learning networks.
TRAIN_EPOCHS: int = 3
TRAIN_BATCH: int = 64


def _check_names(values: Any, argument: str, resolve: Callable[[Any, str], str]) -> list[str]:
    if isinstance(values, str):
        values = [values]
    names = [resolve(v, argument) for v in values]
    if not names:
        raise ValueError(f"Argument `{argument}` must not be empty. Received: {argument}={values!r}")
    return names


def _gradient_flow_group(spec: dict[str, Any]) -> pd.DataFrame:
    """Measure one (activation, depth) group: every initializer x seed with one compiled probe."""
    x, y = spec["x"], spec["y"]
    depth = spec["depth"]
    probe = make_mlp_probe(get_activation(spec["activation"]), depth, compiled=spec["compiled"])
    frames = []
    for init in spec["initializers"]:
        for seed in spec["seeds"]:
            params = mlp_params(depth, spec["width"], init, x.shape[1], spec["num_classes"], seed)
            r = probe(params, x, y)
            frames.append(pd.DataFrame({
                "activation": spec["activation"], "initializer": init, "depth": depth,
                "seed": seed, "layer": np.arange(1, depth + 1),
                "preactivation_variance": r["preactivation_variance"],
                "activation_variance": r["activation_variance"],
                "gradient_variance": r["gradient_variance"],
                "kernel_grad_norm": r["kernel_grad_norm"], "loss": r["loss"],
            }))
    return pd.concat(frames, ignore_index=True)


def _training_group(spec: dict[str, Any]) -> pd.DataFrame:
    """Train every initializer x seed of one (activation, depth) group briefly on the data."""
    x, y, x_val, y_val = spec["x"], spec["y"], spec["x_val"], spec["y_val"]
    rows = []
    for init in spec["initializers"]:
        for seed in spec["seeds"]:
            keras.utils.set_random_seed(seed)
            model = deep_mlp(spec["depth"], spec["width"], spec["activation"], init,
                             input_dim=x.shape[1], num_classes=spec["num_classes"], seed=seed)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            # No compiled metrics: the validation accuracy is measured below, and a metric
            # built inside the first trace of the train step makes TensorFlow trace it twice.
            model.compile(optimizer=keras.optimizers.Adam(), loss=loss,
                          jit_compile="auto" if spec["compiled"] else False,
                          run_eagerly=not spec["compiled"])
            build_optimizer(model)
            start = time.perf_counter()
            hist = model.fit(x, y, epochs=spec["epochs"], batch_size=TRAIN_BATCH, verbose=0,
                             shuffle=True)
            seconds = time.perf_counter() - start
            val_loss, val_acc = evaluate_eagerly(model, x_val, y_val, loss)
            rows.append({"activation": spec["activation"], "initializer": init,
                         "depth": spec["depth"], "seed": seed,
                         "final_loss": float(hist.history["loss"][-1]),
                         "val_loss": float(val_loss), "val_accuracy": float(val_acc),
                         "seconds": seconds})
    return pd.DataFrame(rows)


def _custom_group(spec: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for init in spec["initializers"]:
        for seed in spec["seeds"]:
            out = spec["measure"](activation=spec["activation"], initializer=init,
                                  depth=spec["depth"], seed=seed)
            frame = out.copy() if isinstance(out, pd.DataFrame) else pd.DataFrame([dict(out)])
            for key, value in (("seed", seed), ("depth", spec["depth"]),
                               ("initializer", init), ("activation", spec["activation"])):
                if key not in frame:
                    frame.insert(0, key, value)
            rows.append(frame)
    return pd.concat(rows, ignore_index=True)


_RUNNERS: dict[str, Callable[[dict[str, Any]], pd.DataFrame]] = {
    "gradient_flow": _gradient_flow_group,
    "training": _training_group,
}


def run_group(spec: dict[str, Any]) -> pd.DataFrame:
    """Run one (activation, depth) group; a top-level function so process pools can pickle it."""
    if callable(spec["measure"]):
        return _custom_group(spec)
    return _RUNNERS[spec["measure"]](spec)


def grid(activations: Sequence[str] | str = DEFAULT_ACTIVATIONS,
         initializers: Sequence[str] | str = DEFAULT_INITIALIZERS,
         depths: Sequence[int] | int = DEFAULT_DEPTHS, seeds: Sequence[int] | int = (0,),
         measure: str | Callable[..., Any] = "gradient_flow", width: int = 64,
         x: Any = None, y: Any = None, batch_size: int = 128, epochs: int = TRAIN_EPOCHS,
         executor: Executor | None = None, progress: bool | None = None,
         compiled: bool = True) -> pd.DataFrame:
    """Run a measurement for every activation x initializer x depth x seed; one tidy table.

    Args:
        activations: :mod:`gradhealth.init.activations` catalog names.
        initializers: :func:`gradhealth.init.initializers.available_initializers` names.
        depths: Hidden-layer counts.
        seeds: Weight seeds (network ``seed`` draws the weights ``deep_mlp(..., seed=seed)``
            would draw).
        measure: ``"gradient_flow"`` (one forward/backward pass: per-layer variances and
            kernel gradient norms, one row per layer), ``"training"`` (a short Adam run on the
            data; final loss, validation loss/accuracy, seconds; one row per configuration) or a
            callable ``f(activation=, initializer=, depth=, seed=) -> dict | DataFrame``
            (picklable when used with a process pool).
        width: Units per hidden layer.
        x: Input batch, float ``(n, features)`` (default: standardized sklearn digits:
            ``batch_size`` examples for gradient flow, the training split for training).
        y: Integer labels for ``x``.
        batch_size: Size of the default gradient-flow batch.
        epochs: Training epochs for ``measure="training"``.
        executor: A ``concurrent.futures.Executor`` to run the (activation, depth) groups on;
            None runs them here, one after another.
        progress: Show a rich progress bar; None shows it only when stderr is a terminal.
        compiled: Compile the measurement (``tf.function``/``jax.jit``); False runs it eagerly
            (for benchmarks). torch always runs eagerly.

    Returns:
        A DataFrame whose first columns are ``activation, initializer, depth, seed``; for
        ``"gradient_flow"`` then ``layer, preactivation_variance, activation_variance,
        gradient_variance, kernel_grad_norm, loss``. Rows are in configuration order.

    Raises:
        ValueError: Unknown activation/initializer/measure, empty or non-positive sizes, bad
            data.
        TypeError: ``executor`` is not a ``concurrent.futures.Executor``.

    Example:
        >>> df = grid(["relu", "tanh"], ["he_normal"], depths=[10, 50])
        >>> df.groupby(["activation", "depth"])["kernel_grad_norm"].agg(["min", "max"])
    """

    acts = _check_names(activations, "activations", resolve_name)
    inits = _check_names(initializers, "initializers", resolve_initializer_name)
    depth_list = [depths] if isinstance(depths, (int, np.integer)) else list(depths)
    seed_list = [seeds] if isinstance(seeds, (int, np.integer)) else list(seeds)
    for name, values in (("depths", depth_list), ("seeds", seed_list)):
        if not values:
            raise ValueError(f"Argument `{name}` must not be empty. Received: {name}={values!r}")
    depth_list = [check_positive_int("depths", d) for d in depth_list]
    seed_list = [int(s) for s in seed_list]
    check_positive_int("width", width)
    check_positive_int("epochs", epochs)
    if not callable(measure) and measure not in MEASURES:
        raise ValueError(
            f"Argument `measure` must be one of {list(MEASURES)} or a callable. "
            f"Received: measure={measure!r}"
        )
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(
            "Argument `executor` must be a concurrent.futures.Executor or None. "
            f"Received: executor={executor!r} (of type {type(executor).__name__})"
        )
    data: dict[str, Any] = {}
    if measure == "training":
        if x is None:

            xt, yt, xv, yv = load_digits_split(seed=seed_list[0])
        else:
            xa, ya = default_batch(x, y, batch_size, seed_list[0])
            n_val = max(1, len(xa) // 4)
            xt, yt, xv, yv = xa[n_val:], ya[n_val:], xa[:n_val], ya[:n_val]
        data = {"x": xt, "y": yt, "x_val": xv, "y_val": yv,
                "num_classes": int(max(yt.max(), yv.max())) + 1}
    elif not callable(measure):
        xa, ya = default_batch(x, y, batch_size, seed_list[0])
        data = {"x": xa, "y": ya, "num_classes": int(ya.max()) + 1}
    specs = [
        {"activation": act, "depth": depth, "initializers": inits, "seeds": seed_list,
         "measure": measure, "width": width, "epochs": epochs, "compiled": compiled, **data}
        for act in acts for depth in depth_list
    ]
    show = sys.stderr.isatty() if progress is None else bool(progress)
    results: list[pd.DataFrame | None] = [None] * len(specs)
    with Progress(disable=not show, transient=True) as bar:
        task = bar.add_task(f"grid ({measure if isinstance(measure, str) else 'custom'})",
                            total=len(specs))
        if executor is None:
            for i, spec in enumerate(specs):
                results[i] = run_group(spec)
                bar.advance(task)
        else:

            futures = {executor.submit(run_group, spec): i for i, spec in enumerate(specs)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.advance(task)
    table = pd.concat(results, ignore_index=True)
    order = {"activation": acts, "initializer": inits}
    for column, values in order.items():
        table[column] = pd.Categorical(table[column], categories=values)
    sort_cols = ["activation", "initializer", "depth", "seed"] + (
        ["layer"] if "layer" in table else [])
    table = table.sort_values(sort_cols, kind="stable").reset_index(drop=True)
    for column in order:
        table[column] = table[column].astype(str)
    return table


def summarize(table: pd.DataFrame, thresholds: Thresholds | dict | None = None) -> pd.DataFrame:
    """One row per configuration of a gradient-flow :func:`grid`: how far signals travel.

    Args:
        table: The output of ``grid(..., measure="gradient_flow")``.
        thresholds: :class:`~gradhealth.Thresholds` (``vanishing_ratio``, ``exploding_ratio``)
            used for the ``verdict``.

    Returns:
        DataFrame with columns ``activation, initializer, depth, seed, gradient_ratio``
        (kernel gradient norm of layer 1 over the last hidden layer's), ``variance_ratio``
        (activation variance of the last hidden layer over layer 1's) and ``verdict``
        (``vanishing`` when ``gradient_ratio < vanishing_ratio``, ``exploding`` when it exceeds
        ``exploding_ratio`` (infinity included), else ``healthy``; 0/0 is ``vanishing``).

    Raises:
        ValueError: ``table`` lacks the gradient-flow columns.
    """
    needed = {"activation", "initializer", "depth", "seed", "layer", "kernel_grad_norm",
              "activation_variance"}
    missing = sorted(needed - set(table.columns))
    if missing:
        raise ValueError(
            "Argument `table` must be the output of grid(measure='gradient_flow'); it lacks "
            f"columns {missing}. Received: columns={list(table.columns)}"
        )
    t = Thresholds.coerce(thresholds)
    rows = []
    for key, group in table.groupby(["activation", "initializer", "depth", "seed"], sort=False):
        g = group.sort_values("layer")
        first, last = g["kernel_grad_norm"].iloc[0], g["kernel_grad_norm"].iloc[-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = float(np.float64(first) / np.float64(last))
            var_ratio = float(np.float64(g["activation_variance"].iloc[-1])
                              / np.float64(g["activation_variance"].iloc[0]))
        if np.isnan(ratio):  # 0 / 0: no gradient reaches either end
            verdict = "vanishing"
        elif ratio < t.vanishing_ratio:
            verdict = "vanishing"
        elif ratio > t.exploding_ratio:
            verdict = "exploding"
        else:
            verdict = "healthy"
        rows.append(dict(zip(["activation", "initializer", "depth", "seed"], key, strict=True))
                    | {"gradient_ratio": ratio, "variance_ratio": var_ratio, "verdict": verdict})
    return pd.DataFrame(rows)

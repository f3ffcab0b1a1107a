"""Course experiments on activations: gradient flow through deep MLPs and a training ranking.

They build and train networks, so they live with the course; the activation catalog they use
is the library's (:mod:`gradhealth.init.activations`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradhealth._internal.training import build_optimizer, evaluate_eagerly
from gradhealth._internal.validation import check_positive_int
from gradhealth.data import digits_batch, load_digits_split
from gradhealth.diagnosis import checkup, gradient_stats
from gradhealth.init.activations import available_activations, properties, resolve_name
from gradhealth.models import deep_mlp

__all__ = ["RANKING_BATCH", "gradient_flow", "performance_ranking"]


def gradient_flow(activations: Sequence[str] | None = None, depth: int = 20, width: int = 64,
                  initializer: str = "auto", x: Any = None, y: Any = None, seed: int = 0,
                  batch_size: int = 128) -> pd.DataFrame:
    """Per-layer kernel gradient norms of a deep MLP for each activation, in one tidy table.

    Builds :func:`gradhealth.models.deep_mlp` for each activation (same depth, width, seed and
    data) and reads its gradients with :func:`gradhealth.gradient_stats`.

    Args:
        activations: Catalog names (default: all).
        depth: Hidden layers.
        width: Units per hidden layer.
        initializer: A Keras initializer name for every hidden kernel, or ``"auto"`` to use each
            activation's ``pairs_with`` initializer (a fair comparison of activations).
        x: Input batch (default: ``batch_size`` standardized sklearn digits).
        y: Integer labels for ``x``.
        seed: Model seed.
        batch_size: Size of the default batch.

    Returns:
        DataFrame with columns ``activation, initializer, layer, layer_index, grad_norm,
        relative_norm`` (norm over the largest layer's norm in that network), hidden layers and
        output layer, input to output.

    Raises:
        ValueError: Unknown activation or invalid size.
    """
    check_positive_int("depth", depth)
    names = [resolve_name(n) for n in (activations or available_activations())]
    if x is None:
        x, y = digits_batch(batch_size, seed=seed)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    frames = []
    for name in names:
        init = properties(name)["pairs_with"] if initializer == "auto" else initializer
        model = deep_mlp(depth, width, activation=name, kernel_initializer=init,
                         input_dim=int(np.shape(x)[-1]), seed=seed)
        stats = gradient_stats(model, x, y, loss=loss)
        kernels = stats[stats["variable"] == "kernel"].reset_index(drop=True)
        norms = kernels["grad_norm"].to_numpy(dtype=np.float64)
        frames.append(pd.DataFrame({
            "activation": name, "initializer": init, "layer": kernels["layer"],
            "layer_index": np.arange(1, len(kernels) + 1), "grad_norm": norms,
            "relative_norm": norms / norms.max() if norms.max() > 0 else norms,
        }))
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------
# Performance ranking
# --------------------------------------------------------------------------------------------

#: Budget of :func:`performance_ranking`: every activation gets the same network, optimizer
#: (Adam, Keras' default learning rate 1e-3; Kingma & Ba 2015), mini-batch of 64 and number of
#: epochs, so differences come from the activation (and its paired initializer) alone.
RANKING_BATCH: int = 64


def performance_ranking(activations: Sequence[str] | None = None, depth: int = 8,
                        width: int = 64, epochs: int = 3, seeds: Sequence[int] = (0,),
                        initializer: str = "auto") -> pd.DataFrame:
    """Train each activation briefly on sklearn digits with the same budget and rank them.

    Each activation trains ``deep_mlp(depth, width, activation, initializer)`` with Adam for
    ``epochs`` epochs on the digits training split (same seeds, same data order), then is
    evaluated on the held-out split and examined with :func:`gradhealth.diagnosis` on a batch of
    128 training images.

    Args:
        activations: Catalog names (default: all).
        depth: Hidden layers.
        width: Units per hidden layer.
        epochs: Training epochs (the budget).
        seeds: Seeds; results are averaged over them.
        initializer: Initializer name, or ``"auto"`` for each activation's ``pairs_with``.

    Returns:
        DataFrame sorted best first with columns ``rank, activation, initializer,
        val_accuracy, val_loss, final_loss, health_score, health_status, seconds`` (means over
        seeds; ``health_status`` of the first seed). Ranked by validation accuracy, ties by
        final training loss.

    Raises:
        ValueError: Unknown activation or invalid size.
    """
    names = [resolve_name(n) for n in (activations or available_activations())]
    check_positive_int("depth", depth)
    check_positive_int("width", width)
    check_positive_int("epochs", epochs)
    seeds = list(seeds)
    if not seeds:
        raise ValueError(f"Argument `seeds` must not be empty. Received: seeds={seeds!r}")
    x_train, y_train, x_test, y_test = load_digits_split(seed=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rows = []
    for name in names:
        init = properties(name)["pairs_with"] if initializer == "auto" else initializer
        for seed in seeds:
            keras.utils.set_random_seed(int(seed))
            model = deep_mlp(depth, width, activation=name, kernel_initializer=init,
                             seed=int(seed))
            # No compiled metrics: the accuracy is measured on the held-out split below, and
            # metrics=["accuracy"] would create its variables inside the first trace of the
            # train step, which TensorFlow then traces a second time (1-2 s per activation).
            model.compile(optimizer=keras.optimizers.Adam(), loss=loss)
            build_optimizer(model)
            start = time.perf_counter()
            history = model.fit(x_train, y_train, epochs=epochs, batch_size=RANKING_BATCH,
                                verbose=0, shuffle=True)
            seconds = time.perf_counter() - start
            val_loss, val_acc = evaluate_eagerly(model, x_test, y_test, loss)
            report = checkup(model, x_train[:128], y_train[:128], loss=loss)
            rows.append({"activation": name, "initializer": init, "seed": int(seed),
                         "val_accuracy": float(val_acc), "val_loss": float(val_loss),
                         "final_loss": float(history.history["loss"][-1]),
                         "health_score": float(report.score),
                         "health_status": str(report.status), "seconds": seconds})
    runs = pd.DataFrame(rows)
    table = runs.groupby(["activation", "initializer"], sort=False).agg(
        val_accuracy=("val_accuracy", "mean"), val_loss=("val_loss", "mean"),
        final_loss=("final_loss", "mean"), health_score=("health_score", "mean"),
        health_status=("health_status", "first"), seconds=("seconds", "mean"),
    ).reset_index()
    table = table.sort_values(["val_accuracy", "final_loss"], ascending=[False, True],
                              kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table

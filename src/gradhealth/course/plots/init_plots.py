"""Figures for weight initialization: weight distributions, variance across layers, LSUV.

Pure functions of the library's results (:mod:`gradhealth.init.initializers`,
:func:`gradhealth.course.experiments.grid`, the history of :func:`gradhealth.lsuv_init`); matplotlib
is imported on first use (Agg when not in a notebook).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gradhealth.core.variance import expected_weight_variance
from gradhealth.init.initializers import sample_weights
from gradhealth.report.plots import pyplot

__all__ = ["plot_lsuv_history", "plot_variance_by_layer", "plot_weight_distributions"]


def plot_weight_distributions(initializers: Sequence[str], shape: Sequence[int] = (256, 256),
                              seed: int = 0, bins: int = 80) -> Any:
    """Histogram of one kernel drawn by each initializer, with its expected standard deviation.

    Args:
        initializers: Initializer names.
        shape: Kernel shape.
        seed: Draw seed.
        bins: Histogram bins.

    Returns:
        The matplotlib Figure.
    """

    plt = pyplot()
    n = len(initializers)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), initializers, strict=False):
        w = sample_weights(name, shape, seed).ravel()
        std = np.sqrt(expected_weight_variance(name, shape))
        ax.hist(w, bins=bins, density=True, color="#5c6bc0", alpha=0.8)
        for s in (-std, std):
            ax.axvline(s, color="#c62828", ls="--", lw=1)
        ax.set(title=f"{name}\nexpected std {std:.4f}, measured {w.std():.4f}",
               xlabel="weight value", ylabel="density")
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle(f"Weight distributions for a {tuple(shape)} kernel")
    fig.tight_layout()
    return fig


def plot_variance_by_layer(table: Any, value: str = "activation_variance",
                           by: str = "initializer", ax: Any = None, title: str | None = None
                           ) -> Any:
    """A per-layer quantity (mean over seeds) for each configuration, log scale.

    Args:
        table: Output of :func:`gradhealth.init.propagation.variance_propagation` (several
            concatenated) or of ``grid(measure="gradient_flow")`` filtered to one depth.
        value: Column to draw (``activation_variance``, ``gradient_variance``,
            ``kernel_grad_norm``...).
        by: Column whose values get one line each (several columns: pass a list).
        ax: Axes to draw on.
        title: Title (default: from ``value``).

    Returns:
        The matplotlib Figure.
    """
    plt = pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 4.5))
    else:
        fig = ax.figure
    keys = [by] if isinstance(by, str) else list(by)
    for key, group in table.groupby(keys, sort=False):
        mean = group.groupby("layer")[value].mean()
        label = " + ".join(map(str, key)) if isinstance(key, tuple) else str(key)
        ax.semilogy(mean.index, np.maximum(mean.to_numpy(dtype=float), np.finfo(float).tiny),
                    marker="o", ms=2.5, label=label)
    ax.set(title=title or f"{value.replace('_', ' ')} across layers", xlabel="layer",
           ylabel=f"{value.replace('_', ' ')} (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_lsuv_history(history: Any, ax: Any = None) -> Any:
    """LSUV calibration: each layer's output variance per iteration, with the target band.

    Args:
        history: The DataFrame returned by :func:`gradhealth.lsuv_init`.
        ax: Axes to draw on.

    Returns:
        The matplotlib Figure.
    """
    plt = pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 4.5))
    else:
        fig = ax.figure
    target = history.attrs.get("target_var", 1.0)
    tol = history.attrs.get("tol", 0.1)
    ax.axhspan(target - tol, target + tol, color="#a5d6a7", alpha=0.5,
               label=f"target {target:g} ± {tol:g}")
    for layer, group in history.groupby("layer", sort=False):
        ax.plot(group["iteration"], group["variance"], marker="o", label=layer)
    from matplotlib.ticker import MaxNLocator  # lazy: matplotlib is optional and slow to import

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_yscale("log")
    ax.set(title="LSUV calibration: output variance of each layer", xlabel="iteration",
           ylabel="output variance on the batch (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig

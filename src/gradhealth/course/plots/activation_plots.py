"""Figures for activation functions: pure functions of the library's results.

``plot_functions`` draws each activation and its autodiff derivative side by side;
``plot_gradient_flow`` draws the per-layer gradient norms of :func:`gradhealth.init.activations.
gradient_flow` on a log scale; ``plot_ranking`` draws a :func:`~gradhealth.init.activations.
performance_ranking` table. matplotlib is imported on first use (Agg when not in a notebook).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gradhealth.init.activations import available_activations, derivative, evaluate
from gradhealth.report.plots import pyplot

__all__ = ["plot_functions", "plot_gradient_flow", "plot_ranking"]


def plot_functions(names: Sequence[str] | None = None, x_range: tuple[float, float] = (-5, 5),
                   points: int = 401) -> Any:
    """Each activation (left) and its derivative by autodiff (right) on one pair of axes.

    Args:
        names: Catalog names (default: all).
        x_range: Interval of x.
        points: Samples.

    Returns:
        The matplotlib Figure.
    """

    plt = pyplot()
    names = list(names or available_activations())
    x = np.linspace(*x_range, points)
    fig, (ax_f, ax_d) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in names:
        line, = ax_f.plot(x, evaluate(name, x), label=name)
        ax_d.plot(x, derivative(name, x), color=line.get_color(), label=name)
    ax_f.set(title="Activation functions f(x)", xlabel="x (pre-activation)", ylabel="f(x)")
    ax_d.set(title="Derivatives f'(x) (autodiff): the gradient 'valve'",
             xlabel="x (pre-activation)", ylabel="f'(x)")
    ax_d.axhline(1.0, color="grey", lw=0.8, ls="--")
    for ax in (ax_f, ax_d):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def plot_gradient_flow(flow: Any, ax: Any = None) -> Any:
    """Per-layer kernel gradient norm for each activation, log scale, input on the left.

    Args:
        flow: The DataFrame of :func:`gradhealth.course.activation_experiments.gradient_flow`.
        ax: Axes to draw on, its figure's layout left to the caller (default: a new,
            laid-out figure).

    Returns:
        The matplotlib Figure.
    """
    plt = pyplot()
    own = ax is None  # a caller's Axes: the caller lays its figure out
    if own:
        fig, ax = plt.subplots(figsize=(9, 4.5))
    else:
        fig = ax.figure
    for name, group in flow.groupby("activation", sort=False):
        norms = np.maximum(group["grad_norm"].to_numpy(dtype=float), np.finfo(float).tiny)
        ax.semilogy(group["layer_index"], norms, marker="o", ms=3, label=name)
    ax.set(title="Gradient flow: kernel gradient norm per layer",
           xlabel="layer (1 = nearest the input; last = output)",
           ylabel="||dL/dW|| (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    if own:
        fig.tight_layout()
    return fig


def plot_ranking(ranking: Any) -> Any:
    """Validation accuracy and gradient-health score of a performance ranking, best first.

    Args:
        ranking: The DataFrame of :func:`gradhealth.course.activation_experiments.performance_ranking`.

    Returns:
        The matplotlib Figure.
    """
    plt = pyplot()
    fig, (ax_a, ax_h) = plt.subplots(1, 2, figsize=(11, 4))
    names = ranking["activation"].tolist()
    ax_a.barh(names[::-1], ranking["val_accuracy"].to_numpy()[::-1], color="#1565c0")
    ax_a.set(title="Validation accuracy (same budget)", xlabel="accuracy", xlim=(0, 1))
    ax_h.barh(names[::-1], ranking["health_score"].to_numpy()[::-1], color="#2e7d32")
    ax_h.set(title="Gradient-health score after training", xlabel="score (0-100)",
             xlim=(0, 100))
    for ax in (ax_a, ax_h):
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig

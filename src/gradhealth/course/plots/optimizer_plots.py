"""The optimizer-comparison figure: loss curves, gradient health over time, final accuracy.

A pure function of an :class:`gradhealth.course.optimizers.OptimizerComparison` (or of its saved JSON
reloaded into the same shape): computing and plotting are separate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gradhealth.report.plots import pyplot

__all__ = ["plot_optimizer_comparison"]


def plot_optimizer_comparison(comparison: Any, title: str | None = None) -> Any:
    """Three panels: training loss (log scale), first/last-layer gradient ratio, test accuracy.

    Args:
        comparison: An ``OptimizerComparison`` (needs ``curves()``, ``table()``,
            ``target_loss``, ``steps``, ``batch_size``, ``model_name`` and ``layers``).
        title: Figure title (default: network, budget and batch size).

    Returns:
        The matplotlib Figure.

    Example:
        >>> fig = plot_optimizer_comparison(compare_optimizers(x_tr, y_tr, x_te, y_te))
        >>> fig.savefig("optimizers.png")
    """

    plt = pyplot()
    curves = comparison.curves()
    table = comparison.table()
    names = list(table["optimizer"])
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))

    ax = axes[0]
    for name in names:
        c = curves[curves["optimizer"] == name]
        ax.plot(c["step"], c["train_loss"], marker="o", markersize=3, label=name,
                color=colors[name])
    ax.axhline(comparison.target_loss, color="gray", linestyle="--", linewidth=1,
               label=f"target {comparison.target_loss:g}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("training-set loss (log scale)")
    ax.set_title("Loss curves")
    ax.legend(fontsize=8)

    ax = axes[1]
    first, last = comparison.layers
    for name in names:
        c = curves[curves["optimizer"] == name]
        ratio = c["first_last_ratio"].to_numpy(dtype=np.float64)
        ok = np.isfinite(ratio) & (ratio > 0)
        ax.plot(c["step"].to_numpy()[ok], ratio[ok], marker="o", markersize=3, label=name,
                color=colors[name])
    ax.axhline(1.0, color="gray", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"‖∇ {first}‖ / ‖∇ {last}‖ (log scale)")
    ax.set_title("Gradient health: first / last hidden layer")

    ax = axes[2]
    acc = table["test_accuracy"].to_numpy(dtype=np.float64)
    bars = ax.bar(names, np.nan_to_num(acc), color=[colors[n] for n in names])
    for bar, value, steps in zip(bars, acc, table["steps_to_target"], strict=True):
        label = "diverged" if not np.isfinite(value) else f"{value:.2f}"
        label += "\n" + ("target not reached" if pd.isna(steps) else f"{int(steps)} steps")
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("test accuracy")
    ax.set_title("Final accuracy (and steps to target loss)")
    ax.tick_params(axis="x", rotation=30)

    fig.suptitle(title or f"{comparison.model_name}: {comparison.steps} steps, batch "
                 f"{comparison.batch_size}, same seed and batches for every optimizer")
    fig.tight_layout()
    return fig

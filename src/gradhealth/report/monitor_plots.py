"""Figures of a :class:`gradhealth.GradientHealthMonitor` history: pure functions of the data.

``plot_layer_norms`` draws each layer's gradient norm over the training steps (log scale) with
the alerts marked; ``plot_norm_heatmap`` shows the same numbers as a layer x step heat map of
``log10(norm)``, where an explosion appears as a bright band spreading from the output layers
to the input layers. Both take the tidy DataFrame of ``monitor.history`` (or one loaded from
the monitor's CSV log), so a run can be plotted after the fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from gradhealth.core.stats import combine_norms
from gradhealth.report.plots import pyplot

__all__ = ["ALERT_COLORS", "KINDS", "layer_norm_table", "plot_clipping_comparison",
           "plot_layer_norms", "plot_monitor", "plot_norm_heatmap"]

KINDS: tuple[str, ...] = ("norms", "heatmap", "both")
ALERT_COLORS: dict[str, str] = {"threshold": "#c62828", "growth": "#ef6c00", "spike": "#6a1b9a",
                                "nonfinite": "#000000"}


def layer_norm_table(history: Any) -> Any:
    """Per-layer gradient norm at each logged step: a DataFrame with steps as rows and layers
    as columns (input to output order); a layer's norm combines its variables' norms."""
    if history is None or len(history) == 0:
        raise ValueError("The monitor history is empty: train with the monitor attached first "
                         "(model.fit(..., callbacks=[monitor])).")
    missing = {"step", "layer", "grad_norm"} - set(history.columns)
    if missing:
        raise ValueError(f"Argument `history` lacks the columns {sorted(missing)}: pass "
                         "monitor.history or a DataFrame read from the monitor's CSV log.")
    order = list(dict.fromkeys(history["layer"]))
    table = history.groupby(["step", "layer"], sort=False)["grad_norm"].agg(
        lambda s: combine_norms(s.to_numpy()))
    return pd.DataFrame(table).reset_index().pivot(index="step", columns="layer",
                                                   values="grad_norm")[order]


def _mark_alerts(ax: Any, alerts: Sequence[Any] | None) -> None:
    seen: set[str] = set()
    for a in alerts or []:
        kind = getattr(a, "kind", None) or a["kind"]
        step = getattr(a, "step", None) if not isinstance(a, dict) else a["step"]
        label = f"alert: {kind}" if kind not in seen else None
        seen.add(kind)
        ax.axvline(step, color=ALERT_COLORS.get(kind, "grey"), ls="--", lw=1, label=label)


def plot_layer_norms(history: Any, alerts: Sequence[Any] | None = None, ax: Any = None,
                     title: str | None = None, max_layers: int = 12) -> Any:
    """Gradient norm per layer over training steps, log scale, alerts as dashed lines.

    Args:
        history: ``monitor.history``.
        alerts: ``monitor.alerts`` (objects or dicts with ``step`` and ``kind``).
        ax: Axes to draw on; a new figure when None.
        title: Plot title.
        max_layers: Draw at most this many layers, evenly spread from input to output.

    Returns:
        The matplotlib Axes.
    """
    plt = pyplot()
    table = layer_norm_table(history)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    cols = list(table.columns)
    if len(cols) > max_layers:
        cols = [cols[i] for i in np.linspace(0, len(cols) - 1, max_layers).round().astype(int)]
    cmap = plt.get_cmap("viridis")
    for i, layer in enumerate(cols):
        values = table[layer].where(table[layer] > 0)
        ax.plot(table.index, values, color=cmap(i / max(len(cols) - 1, 1)), lw=1.2,
                label=layer.rsplit("/", 1)[-1])
    _mark_alerts(ax, alerts)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("gradient L2 norm (log scale)")
    ax.set_title(title or "Gradient norm per layer during training")
    ax.legend(fontsize=7, ncol=2, loc="best")
    ax.grid(True, which="major", alpha=0.3)
    return ax


def plot_norm_heatmap(history: Any, ax: Any = None, title: str | None = None) -> Any:
    """Heat map of ``log10(gradient norm)``: layers (input at the top) x training steps.

    Args:
        history: ``monitor.history``.
        ax: Axes to draw on; a new figure when None.
        title: Plot title.

    Returns:
        The matplotlib Axes.
    """
    plt = pyplot()
    table = layer_norm_table(history)
    values = table.to_numpy(dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    steps = table.index.to_numpy()
    extent = (float(steps[0]) - 0.5, float(steps[-1]) + 0.5, len(table.columns) - 0.5, -0.5)
    image = ax.imshow(np.ma.masked_invalid(logs), aspect="auto", cmap="magma",
                      interpolation="nearest", extent=extent)
    ax.set_yticks(range(len(table.columns)))
    ax.set_yticklabels([c.rsplit("/", 1)[-1] for c in table.columns], fontsize=7)
    ax.set_xlabel("training step")
    ax.set_ylabel("layer (input at top)")
    ax.set_title(title or "log10 gradient norm: layer x step")
    ax.figure.colorbar(image, ax=ax, label="log10(gradient norm)")
    return ax


def plot_monitor(history: Any, alerts: Sequence[Any] | None = None, kind: str = "both") -> Any:
    """The monitor's figure: ``"norms"``, ``"heatmap"`` or ``"both"`` side by side.

    Returns:
        The matplotlib Figure.
    """
    if kind not in KINDS:
        raise ValueError(f"Argument `kind` must be one of {list(KINDS)}. Received: kind={kind!r}")
    plt = pyplot()
    if kind == "both":
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4))
        plot_layer_norms(history, alerts, ax=a1)
        plot_norm_heatmap(history, ax=a2)
    else:
        fig, ax = plt.subplots(figsize=(8, 4))
        if kind == "norms":
            plot_layer_norms(history, alerts, ax=ax)
        else:
            plot_norm_heatmap(history, ax=ax)
    fig.tight_layout()
    return fig


def plot_clipping_comparison(norms: Any, ax: Any = None, title: str | None = None) -> Any:
    """Global gradient norm per step for several runs (the ``norms`` frame of
    :func:`gradhealth.course.clipping.compare_clipping`), log scale; a run's line ends where its
    gradients stop being finite (marked with an x).

    Returns:
        The matplotlib Axes.
    """
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    for name in norms.columns:
        series = norms[name]
        finite = series[np.isfinite(series) & (series > 0)]
        (line,) = ax.plot(finite.index, finite.to_numpy(), lw=1.5, label=name)
        if len(finite) < len(series.dropna()) or series.isna().any():
            bad = series.index[~np.isfinite(series)]
            if len(bad):
                ax.plot([bad.min()], [finite.max() if len(finite) else 1.0], "x",
                        color=line.get_color(), ms=9)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("global gradient norm before clipping (log)")
    ax.set_title(title or "Gradient norm under each clipping rule (x = gradients became NaN)")
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    return ax

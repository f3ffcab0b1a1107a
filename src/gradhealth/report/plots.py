"""Gradient-flow plots for health reports."""

from __future__ import annotations

import io
import os
from typing import Any

from gradhealth.core.diagnosis import NOT_DEPTH_EVIDENCE

__all__ = ["STATUS_COLORS", "compare_gradient_flow", "figure_png", "plot_gradient_flow",
           "plot_time_profiles", "pyplot"]

STATUS_COLORS: dict[str, str] = {
    "healthy": "#2e7d32",
    "vanishing": "#1565c0",
    "dead": "#6d4c41",
    "exploding": "#c62828",
    "nonfinite": "#000000",
    "unused": "#9e9e9e",
    "not depth evidence": "#a5d6a7",
}


def pyplot() -> Any:
    """``matplotlib.pyplot``, with a backend that shows figures where the code runs.

    Inside a Jupyter kernel figures must render inline, also when ``MPLBACKEND=Agg`` is set
    for a batch run (``make demo`` executes notebooks that way): the inline backend is selected
    so every figure reaches the notebook's outputs. Outside a kernel with no display (scripts,
    tests, CI), the non-interactive Agg backend is used so nothing tries to open a window.
    """
    import matplotlib  # lazy: plotting is optional and matplotlib is slow to import

    try:
        from IPython import get_ipython  # lazy: present only where Jupyter is installed

        shell = get_ipython()
        in_kernel = shell is not None and "IPKernelApp" in getattr(shell, "config", {})
    except ImportError:
        in_kernel = False
    inline = "module://matplotlib_inline.backend_inline"
    if in_kernel:
        if matplotlib.get_backend() != inline:
            matplotlib.use(inline)
    elif matplotlib.get_backend().lower() != "agg" and not _has_display():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as matplotlib above

    return plt


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or \
        os.name == "nt"


def plot_gradient_flow(report: Any, ax: Any = None, title: str | None = None) -> Any:
    """Per-layer gradient norm on a log scale, bars coloured by status (healthy layers that are
    not depth evidence, :data:`gradhealth.core.diagnosis.NOT_DEPTH_EVIDENCE`, in pale green).

    Args:
        report: A :class:`~gradhealth.HealthReport` (or anything with a ``layers`` DataFrame
            holding ``layer``, ``grad_norm`` and ``status``).
        ax: A matplotlib Axes to draw on (its figure's layout is left to the caller); a new,
            laid-out figure when None.
        title: Plot title (default: model name, status and score).

    Returns:
        The matplotlib Figure.
    """
    plt = pyplot()
    layers = report.layers
    own = ax is None  # a caller's Axes: the caller lays its figure out
    if own:
        fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(layers) + 3), 3.6))
    else:
        fig = ax.figure
    norms = layers["grad_norm"].astype(float).fillna(0.0)
    positive = norms[norms > 0]
    floor = float(positive.min()) / 10 if len(positive) else 1e-12
    heights = norms.where(norms > 0, floor)
    # Healthy layers whose gradient is not read along depth (LayerScale branches, attention
    # query/key, normalization, vectors) in a pale green: their small bars are by design.
    roles = layers["role"] if "role" in layers else [None] * len(layers)
    keys = ["not depth evidence" if s == "healthy" and r in NOT_DEPTH_EVIDENCE else s
            for s, r in zip(layers["status"], roles, strict=True)]
    colors = [STATUS_COLORS.get(k, "#9e9e9e") for k in keys]
    ax.bar(range(1, len(layers) + 1), heights, color=colors)
    ax.set_yscale("log")
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel("gradient L2 norm (log scale)")
    ctx = getattr(report, "context", {}) or {}
    if title is None and hasattr(report, "status"):
        title = f"{ctx.get('model_name', 'model')}: {report.status} (score {report.score:g})"
    ax.set_title(title or "gradient flow")
    if len(layers) <= 12:
        ax.set_xticks(range(1, len(layers) + 1), list(layers["layer"]), rotation=45, ha="right")
    from matplotlib.patches import Patch  # lazy: see pyplot

    seen = list(dict.fromkeys(keys))
    ax.legend(handles=[Patch(color=STATUS_COLORS.get(s, "#9e9e9e"), label=s) for s in seen],
              loc="best", fontsize=8)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    if own:
        fig.tight_layout()
    return fig


def compare_gradient_flow(reports: dict[str, Any], ax: Any = None) -> Any:
    """Overlay the per-layer gradient norms of several reports (one line each, log scale).

    Args:
        reports: Mapping label -> HealthReport.
        ax: Axes to draw on (its figure's layout is left to the caller); a new, laid-out
            figure when None.

    Returns:
        The matplotlib Figure.
    """
    plt = pyplot()
    own = ax is None  # a caller's Axes: the caller lays its figure out
    if own:
        fig, ax = plt.subplots(figsize=(8, 4))
    else:
        fig = ax.figure
    for label, rep in reports.items():
        norms = rep.layers["grad_norm"].astype(float)
        ax.plot(range(1, len(norms) + 1), norms.where(norms > 0), marker="o", markersize=3,
                label=f"{label}: {rep.status} ({rep.score:g})")
    ax.set_yscale("log")
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel("gradient L2 norm (log scale)")
    ax.set_title("Gradient flow compared")
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    if own:
        fig.tight_layout()
    return fig


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes and close it."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def plot_time_profiles(report: Any, ax: Any = None, title: str | None = None) -> Any:
    """The gradient reaching each timestep of each recurrent layer, log scale.

    One line per measured recurrent layer (``report.context["time_profiles"]``): the norm of
    ``dL/dx_t`` against the timestep ``t`` (the loss reads the last step), with the per-step
    decay factor in the legend. A straight falling line on the log scale is geometric decay
    through time (Bengio, Simard & Frasconi 1994).

    Args:
        report: A :class:`~gradhealth.HealthReport` (or anything with a ``context`` dict).
        ax: Axes to draw on (its figure's layout is left to the caller); a new, laid-out
            figure when None.
        title: Plot title.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: The report has no measured time profile (no recurrent layer).
    """
    ctx = getattr(report, "context", {}) or {}
    profiles = {k: v for k, v in (ctx.get("time_profiles") or {}).items() if v.get("measured")}
    if not profiles:
        raise ValueError("The report has no gradient-through-time profile: the model has no "
                         "top-level recurrent layer whose input could be reached.")
    plt = pyplot()
    own = ax is None  # a caller's Axes: the caller lays its figure out
    if own:
        fig, ax = plt.subplots(figsize=(7.0, 3.6))
    else:
        fig = ax.figure
    statuses = dict(zip(report.layers["layer"], report.layers["status"], strict=False)) \
        if hasattr(report, "layers") else {}
    for name, prof in profiles.items():
        values = [v if (v is not None and v > 0) else float("nan") for v in prof["profile"]]
        status = statuses.get(name, "healthy")
        ax.plot(range(1, len(values) + 1), values, lw=1.6,
                color=STATUS_COLORS.get(status, "#555"),
                label=f"{prof.get('layer', name)} ({prof.get('cell', '')}): "
                      f"x{prof.get('decay_per_step', float('nan')):.3g} per step back")
    ax.set_yscale("log")
    ax.set_xlabel("timestep (the loss reads the last one)")
    ax.set_ylabel("||dL/dx_t|| (log scale)")
    ax.set_title(title or "Gradient reaching each timestep")
    ax.legend(fontsize=8, loc="best")
    ax.grid(True, which="major", alpha=0.3)
    if own:
        fig.tight_layout()
    return fig
